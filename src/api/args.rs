//! Task arguments: what a parameter of type `T` accepts (`T`, `ObjectRef<T>`, `&ObjectRef<T>`).

use crate::error::Result;
use crate::ids::ObjectId;
use crate::objects::codec;
use crate::objects::object_ref::ObjectRef;
use crate::objects::ownership;
use crate::protocol::task::TaskArg;
use serde::Serialize;

/// An argument ready to be put into a task spec. It holds pins on the objects it mentions
/// (taken while the caller's value or ref was still alive); the task takes them over, and a
/// prepared argument dropped unused releases them.
#[doc(hidden)]
#[derive(Debug)]
pub struct PreparedArg {
    arg: Option<TaskArg>,
    pins: Vec<ObjectId>,
}

impl PreparedArg {
    fn into_parts(mut self) -> (Option<TaskArg>, Vec<ObjectId>) {
        (self.arg.take(), std::mem::take(&mut self.pins))
    }
}

impl Drop for PreparedArg {
    fn drop(&mut self) {
        if !self.pins.is_empty() {
            ownership::with_current(|t| t.unpin(&self.pins));
        }
    }
}

/// A value accepted for a remote parameter of type `T`: the value itself, or a ref to one
/// (resolved to the value before the task runs).
///
/// # Examples
/// ```no_run
/// #[lumen::remote]
/// fn add(a: i64, b: i64) -> i64 { a + b }
///
/// lumen::init()?;
/// let one = lumen::put(1i64);
/// let two = add::remote(&one, 1);        // &ObjectRef<i64> and i64
/// let three = add::remote(two, one);     // ObjectRef<i64> by value
/// assert_eq!(lumen::get(&three)?, 3);
/// # Ok::<(), lumen::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be passed where a remote function expects `{T}`",
    label = "expected `{T}`, `ObjectRef<{T}>` or `&ObjectRef<{T}>`",
    note = "a remote parameter of type `T` accepts a `T` (which must implement serde::Serialize), an `ObjectRef<T>` or a `&ObjectRef<T>`"
)]
pub trait IntoArg<T> {
    #[doc(hidden)]
    fn into_arg(self) -> Result<PreparedArg>;
}

impl<T: Serialize + 'static> IntoArg<T> for T {
    fn into_arg(self) -> Result<PreparedArg> {
        // Refs inside the value are pinned by the encoder before `self` is dropped.
        let (bytes, pins) = codec::encode_owned(std::any::type_name::<T>(), self)?.into_parts();
        Ok(PreparedArg {
            arg: Some(TaskArg::Value(bytes)),
            pins: pins.into_iter().map(|r| r.id).collect(),
        })
    }
}

impl<T> IntoArg<T> for ObjectRef<T> {
    fn into_arg(self) -> Result<PreparedArg> {
        <&ObjectRef<T> as IntoArg<T>>::into_arg(&self)
    }
}

impl<T> IntoArg<T> for &ObjectRef<T> {
    fn into_arg(self) -> Result<PreparedArg> {
        // Pinned now, while the caller's ref (possibly a temporary) is alive.
        let pins = ownership::with_current(|t| {
            t.pin(&[self.id()]);
            vec![self.id()]
        })
        .unwrap_or_default();
        Ok(PreparedArg {
            arg: Some(TaskArg::Ref(self.raw().clone())),
            pins,
        })
    }
}

/// Collects prepared arguments: the args and the pins they hand over. On an error, every pin is
/// released.
pub(crate) fn collect(args: Vec<Result<PreparedArg>>) -> Result<(Vec<TaskArg>, Vec<ObjectId>)> {
    let mut out = Vec::with_capacity(args.len());
    let mut pins = Vec::new();
    let mut failed = None;
    for a in args {
        match a {
            Ok(a) => {
                let (arg, p) = a.into_parts();
                pins.extend(p);
                if let Some(arg) = arg {
                    out.push(arg);
                }
            }
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    match failed {
        None => Ok((out, pins)),
        Some(e) => {
            ownership::with_current(|t| t.unpin(&pins));
            Err(e)
        }
    }
}
