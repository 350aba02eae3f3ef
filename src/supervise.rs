//! Supervision of lumen's own components: a panic inside a system component is never silent.
//!
//! The GCS, raylets, store shards and the owner's message handlers are lumen's code, not the
//! user's; a panic in one of them means its state can no longer be trusted, and the messages it
//! would have handled would be dropped without a word (an actix actor whose thread unwinds is
//! simply gone). So each such component names itself on its thread (`component`) and marks
//! the message it is handling (`handling`); if a panic happens there, the process logs which
//! component panicked, on which message and why, and exits with status [`EXIT_CODE`]. Panics in
//! user code (tasks, actor methods) are caught where that code runs and become task errors; they
//! never reach this hook.
//!
//! `message_span!` does that marking and also enters a `debug` span for the message (its kind
//! and the node, job, task or actor ids it carries), a root span per handled message: cheap when
//! the level is off (see the macro).

use std::cell::{Cell, RefCell};
use std::sync::Once;

/// The exit status of a process whose system component panicked (`EX_SOFTWARE`).
pub const EXIT_CODE: i32 = 70;

thread_local! {
    static COMPONENT: Cell<Option<&'static str>> = const { Cell::new(None) };
    static MESSAGE: Cell<Option<&'static str>> = const { Cell::new(None) };
    /// Where the last panic on this thread happened, until taken.
    static PANICKED_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Where the last panic on this thread happened (`file:line:column`), if the hook saw one since
/// the last call: for a task's panic, caught on the thread it happened on.
pub(crate) fn take_panic_location() -> Option<String> {
    PANICKED_AT.with(|p| p.borrow_mut().take())
}

static HOOK: Once = Once::new();

/// Installs the panic hook (once per process), chained in front of the one already there. It
/// also notes where each panic happened, for task errors ([`take_panic_location`]).
pub(crate) fn install() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(l) = info.location() {
                let at = format!("{}:{}:{}", l.file(), l.line(), l.column());
                PANICKED_AT.with(|p| *p.borrow_mut() = Some(at));
            }
            let component = COMPONENT.with(Cell::get);
            let message = MESSAGE.with(Cell::get);
            match (component, message) {
                (Some(component), Some(message)) => {
                    let what = info
                        .payload()
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| info.payload().downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    let at = info
                        .location()
                        .map(|l| format!(" at {}:{}", l.file(), l.line()))
                        .unwrap_or_default();
                    let report = format!(
                        "lumen: the {component} panicked while handling {message}{at}: {what}; \
                         its state can no longer be trusted, so this process exits (status {})",
                        EXIT_CODE
                    );
                    tracing::error!("{report}");
                    eprintln!("{report}");
                    std::process::exit(EXIT_CODE);
                }
                _ => previous(info),
            }
        }));
    });
}

/// Names the system component that runs on this thread (call it where the component starts on
/// its own thread).
pub(crate) fn component(name: &'static str) {
    install();
    COMPONENT.with(|c| c.set(Some(name)));
}

/// While alive, this thread is handling a message of type `M`.
#[must_use]
pub(crate) struct Handling {
    previous: (Option<&'static str>, Option<&'static str>),
}

impl Drop for Handling {
    fn drop(&mut self) {
        let (component, message) = self.previous;
        COMPONENT.with(|c| c.set(component));
        MESSAGE.with(|m| m.set(message));
    }
}

/// The type's name without its path (runs on every handled message: a byte search, not a
/// substring search, unless the name is generic).
fn short_name<M>() -> &'static str {
    let full = std::any::type_name::<M>();
    if full.contains('<') {
        return full.rsplit("::").next().unwrap_or(full);
    }
    full.rfind(':').map_or(full, |i| &full[i + 1..])
}

/// Marks this thread as handling message type `$m` ([`handling`]) and enters a root `debug`
/// span named `$component` whose `msg` field is the message's kind, with the given fields (ids
/// the message carries, in `tracing`'s field syntax). Returns a guard for both: bind it for the
/// rest of the handler. With the `debug` level off (or no subscriber at all), this costs a
/// thread-local write and one atomic load of `tracing`'s global level: the fields are not
/// evaluated, nothing is allocated or formatted.
macro_rules! message_span {
    ($component:literal, $m:ty $(, $($fields:tt)+)?) => {
        (
            $crate::supervise::handling::<$m>(),
            // Checked first: with no subscriber at debug anywhere in the process (or none at
            // all), not even the disabled span `tracing`'s `log` feature would offer to `log`.
            if ::tracing::level_enabled!(::tracing::Level::DEBUG) {
                ::tracing::debug_span!(
                    parent: None,
                    $component,
                    msg = stringify!($m)
                    $(, $($fields)+)?
                )
            } else {
                ::tracing::Span::none()
            }
            .entered(),
        )
    };
}
pub(crate) use message_span;

/// Marks this thread as handling `M` in the component named on it.
pub(crate) fn handling<M>() -> Handling {
    let previous = (
        COMPONENT.with(Cell::get),
        MESSAGE.with(|m| m.replace(Some(short_name::<M>()))),
    );
    Handling { previous }
}

/// Marks this thread as handling `M` in `component` (for handlers that run on whichever thread
/// delivers the message, such as the owner's).
pub(crate) fn handling_in<M>(component: &'static str) -> Handling {
    install();
    let previous = (
        COMPONENT.with(|c| c.replace(Some(component))),
        MESSAGE.with(|m| m.replace(Some(short_name::<M>()))),
    );
    Handling { previous }
}

/// Whether a panic on this thread now would be reported as a system component's.
#[cfg(test)]
pub(crate) fn current() -> Option<(&'static str, &'static str)> {
    Some((COMPONENT.with(Cell::get)?, MESSAGE.with(Cell::get)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ping;

    #[test]
    fn handling_marks_the_message_and_restores_what_was_there() {
        std::thread::spawn(|| {
            assert_eq!(current(), None);
            component("raylet");
            assert_eq!(current(), None, "no message yet");
            {
                let _h = handling::<Ping>();
                assert_eq!(current(), Some(("raylet", "Ping")));
                {
                    let _inner = handling_in::<u32>("object owner");
                    assert_eq!(current(), Some(("object owner", "u32")));
                }
                assert_eq!(current(), Some(("raylet", "Ping")));
            }
            assert_eq!(current(), None);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_message_span_evaluates_its_fields_only_when_wanted() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static EVALUATED: AtomicUsize = AtomicUsize::new(0);
        let field = || EVALUATED.fetch_add(1, Ordering::Relaxed);
        std::thread::spawn(move || {
            component("raylet");
            // No subscriber at all, then one (a node's, at its default level) that wants no
            // debug spans: the field is never computed.
            {
                let _h = message_span!("raylet", Ping, task = field());
                assert!(tracing::Span::current().is_none());
            }
            let info = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::INFO)
                .with_test_writer()
                .finish();
            tracing::subscriber::with_default(info, || {
                let _h = message_span!("raylet", Ping, task = field());
                assert_eq!(current(), Some(("raylet", "Ping")));
                assert!(tracing::Span::current().is_none());
            });
            assert_eq!(EVALUATED.load(Ordering::Relaxed), 0);
            // One that does: the span is entered, with its fields.
            let debug = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_test_writer()
                .finish();
            tracing::subscriber::with_default(debug, || {
                let _h = message_span!("raylet", Ping, task = field());
                let span = tracing::Span::current();
                assert_eq!(span.metadata().map(|m| m.name()), Some("raylet"));
                assert!(span.field("msg").is_some() && span.field("task").is_some());
            });
            assert_eq!(EVALUATED.load(Ordering::Relaxed), 1);
            assert_eq!(current(), None);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn user_panics_outside_a_handler_are_left_to_the_previous_hook() {
        install();
        let r = std::thread::spawn(|| panic!("user code")).join();
        assert!(r.is_err(), "the panic unwound normally instead of exiting");
    }

    /// A panic in an actix actor that names itself a component ends the whole process with
    /// [`EXIT_CODE`] and a report naming the component and the message, instead of the actor
    /// silently vanishing. Run in a child process (this test binary, re-executed).
    #[test]
    fn a_panicking_component_ends_the_process_with_a_report() {
        use actix::prelude::*;

        const CHILD: &str = "LUMEN_SUPERVISE_CHILD";
        #[derive(Message)]
        #[rtype(result = "()")]
        struct Boom;
        struct Component;
        impl Actor for Component {
            type Context = Context<Self>;
            fn started(&mut self, _: &mut Context<Self>) {
                component("test component");
            }
        }
        impl Handler<Boom> for Component {
            type Result = ();
            fn handle(&mut self, _: Boom, _: &mut Context<Self>) {
                let _h = handling::<Boom>();
                panic!("state is broken");
            }
        }

        if std::env::var_os(CHILD).is_some() {
            let system = System::new();
            system.block_on(async {
                let addr = Component.start();
                let _ = addr.send(Boom).await;
            });
            // Reached only if the panic did not end the process.
            std::process::exit(0);
        }
        let exe = std::env::current_exe().expect("the test binary");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "supervise::tests::a_panicking_component_ends_the_process_with_a_report",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .expect("re-run the test binary");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_CODE), "stderr: {stderr}");
        assert!(
            stderr.contains("the test component panicked while handling Boom")
                && stderr.contains("state is broken"),
            "stderr: {stderr}"
        );
    }
}
