//! PURE: whether a lookup for a known node starts an agent session (one token per ramdisk
//! boot). No IO and no clock; [`super::AgentHub::lookup`] feeds it the node's session.

/// What the hub knows about a node's session when a lookup arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionView {
    /// The conductor booted the machine into the agent and no lookup took the token yet.
    pub boot_window: bool,
    /// A session is live (its token is accepted).
    pub live: bool,
    /// The caller sent the live session's token.
    pub presented_live: bool,
    /// The caller sent the token of the session the last boot ended.
    pub presented_previous: bool,
}

/// The answer to a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A new session begins: hand out a fresh token.
    Issue,
    /// The live session's own agent looked up again: it keeps its token, none is sent.
    Continue,
    /// Another session is live (or the caller is the agent of the boot that ended): refused.
    Conflict,
    /// No session is live and the conductor booted nothing: no token until it does.
    NoBoot,
}

/// Decides a lookup. The live agent keeps its session; a boot window gives its token to the
/// first caller that is not the agent of the boot before; anything else gets no token.
pub fn decide(v: &SessionView) -> Decision {
    if v.live && v.presented_live {
        Decision::Continue
    } else if v.boot_window && !v.presented_previous {
        Decision::Issue
    } else if v.live || v.boot_window {
        Decision::Conflict
    } else {
        Decision::NoBoot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_token_per_boot() {
        let v = |boot_window, live, presented_live, presented_previous| SessionView {
            boot_window,
            live,
            presented_live,
            presented_previous,
        };
        // (window, live, presented live, presented previous) -> decision
        let table = [
            (v(true, false, false, false), Decision::Issue),
            (v(true, false, false, true), Decision::Conflict),
            (v(false, true, true, false), Decision::Continue),
            (v(false, true, false, false), Decision::Conflict),
            (v(false, true, false, true), Decision::Conflict),
            (v(false, false, false, false), Decision::NoBoot),
            (v(false, false, false, true), Decision::NoBoot),
            (v(true, true, true, false), Decision::Continue),
            (v(true, true, false, false), Decision::Issue),
        ];
        for (view, want) in table {
            assert_eq!(decide(&view), want, "{view:?}");
        }
    }
}
