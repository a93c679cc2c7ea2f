//! Wire types shared by the agent and the controller.
