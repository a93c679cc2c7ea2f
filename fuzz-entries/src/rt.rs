//! The one tokio runtime the async targets block on (current-thread, built once per
//! process; libFuzzer runs inputs one after another on one thread).

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Runtime;

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread tokio runtime")
    })
}

/// Runs `f` to completion on the shared runtime.
pub fn block_on<F: Future>(f: F) -> F::Output {
    runtime().block_on(f)
}
