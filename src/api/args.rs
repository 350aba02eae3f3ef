//! Task arguments: what a parameter of type `T` accepts (`T`, `ObjectRef<T>`, `&ObjectRef<T>`).

use crate::error::Result;
use crate::ids::ObjectId;
use crate::objects::codec;
use crate::objects::object_ref::ObjectRef;
use crate::task::TaskArg;
use serde::Serialize;

/// An argument ready to be put into a task spec, with the objects it keeps alive.
#[doc(hidden)]
#[derive(Debug)]
pub struct PreparedArg {
    pub(crate) arg: TaskArg,
    pub(crate) pins: Vec<ObjectId>,
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

impl<T: Serialize> IntoArg<T> for T {
    fn into_arg(self) -> Result<PreparedArg> {
        let enc = codec::encode(std::any::type_name::<T>(), &self)?;
        Ok(PreparedArg {
            arg: TaskArg::Value(enc.bytes),
            pins: enc.contained.into_iter().map(|r| r.id).collect(),
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
        Ok(PreparedArg {
            arg: TaskArg::Ref(self.raw().clone()),
            pins: vec![self.id()],
        })
    }
}

/// Collects prepared arguments: the args and every object they pin.
pub(crate) fn collect(args: Vec<Result<PreparedArg>>) -> Result<(Vec<TaskArg>, Vec<ObjectId>)> {
    let mut out = Vec::with_capacity(args.len());
    let mut pins = Vec::new();
    for a in args {
        let a = a?;
        out.push(a.arg);
        pins.extend(a.pins);
    }
    Ok((out, pins))
}
