//! Catching a member's panic as a finding: the panic's message and where it happened, so that a
//! broken invariant of the store or of Raft ends one member, not the whole run.
//!
//! The payload of a panic carries only its message; where it happened is known only to the panic
//! hook. A hook installed once (chaining to the one before it, so the panic still prints) keeps
//! the location of the last panic on the thread that panicked, and [`catch`] reads it right after
//! the unwind. This never changes what a run does: it only records.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe, UnwindSafe};
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

thread_local! {
    static LAST_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A panic caught in a future.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caught {
    pub message: String,
    pub location: Option<String>,
}

fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
            LAST_LOCATION.with(|last| *last.borrow_mut() = location);
            previous(info);
        }));
    });
}

/// The message of a panic payload (`panic!` with a literal or with a format).
pub fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// Runs `future` to its end, or to its first panic, which is returned with where it happened.
pub async fn catch<F: Future + UnwindSafe>(future: F) -> Result<F::Output, Caught> {
    install_hook();
    CatchUnwind {
        future: Box::pin(future),
    }
    .await
}

struct CatchUnwind<F> {
    future: Pin<Box<F>>,
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Caught>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = self.future.as_mut();
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(Caught {
                message: message(payload.as_ref()),
                location: LAST_LOCATION.with(|last| last.borrow_mut().take()),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_a_future_comes_back_with_its_message_and_place() {
        let caught = crate::simulate(1, || async {
            catch(async {
                let keys: Vec<u8> = Vec::new();
                if keys.is_empty() {
                    panic!("revision {} went backwards", 7);
                }
                1
            })
            .await
        })
        .unwrap_err();
        assert_eq!(caught.message, "revision 7 went backwards");
        let location = caught.location.expect("the hook saw where");
        assert!(location.starts_with("sim/src/panics.rs:"), "{location}");
        let fine = crate::simulate(1, || async { catch(async { 5 }).await });
        assert_eq!(fine, Ok(5));
    }
}
