//! The C boundary and the thread-local last error. Every exported function
//! is one [`ffi_fn!`] call, which runs its body through [`manager_boundary`],
//! [`status_boundary`] or [`value_boundary`], so no panic unwinds into C.

use crate::status::cg_status;
use creditgate_core::{CreditManager, Error, LimitSource};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The body of every exported function: the one place the C boundary is
/// written. Each form catches panics (`CG_PANIC`, or the fallback value)
/// and turns errors into a status and this thread's last error.
///
/// `handle manager => m; out [a_out, ...]; args [kind name, ...]; { body }`,
/// a call on a handle, in this order:
/// 1. every out-pointer is checked (NULL: `CG_INVALID_ARGUMENT`) and reset
///    to its empty value (NULL, 0, a zeroed struct), before anything else,
///    so a failed call leaves no garbage behind;
/// 2. the handle: NULL is `CG_INVALID_ARGUMENT`, else `m: &CreditManager`;
/// 3. each argument `name` is rebound to its safe value
///    `ffi::kind(name, "name")?`, in the order listed: `text` a `&str`,
///    `opt_text` an `Option<&str>`, `opt_out` an optional out-pointer,
///    `usage` / `opt_usage` a core `Usage`, `model_price` a core
///    `ModelPrice`, `entry_options` / `grant_options` / `usage_query` an
///    options struct's safe view (NULL: the defaults);
/// 4. the body, a block of `Result<()>`, runs with those safe values only;
///    errors are counted once in the handle's `errors_total`.
///
/// `status; out [...]; args [...]; { body }` is the same without a handle
/// (`cg_open`); `value fallback; { body }` runs an infallible body (a panic
/// gives `fallback`); `free ffi_fn(ptr)` releases what C hands back.
///
/// The `unsafe` blocks below are the only ones of the exports. Each calls
/// one `ffi` function whose contract is the exports' contract, stated once
/// in the header's preamble ("Pointers and ownership"): a handle is NULL or
/// live, a string NULL or NUL-terminated, an out-pointer NULL or writable,
/// an options pointer NULL or readable, a freed pointer NULL or ours.
macro_rules! ffi_fn {
    (
        handle $manager:ident => $m:ident;
        $(out [$($out:ident),* $(,)?];)?
        $(args [$($kind:ident $arg:ident),* $(,)?];)?
        $body:block
    ) => {{
        // SAFETY: the exports' contract: `$manager` is NULL or a live handle.
        let counted = unsafe { $crate::ffi::manager($manager) };
        $crate::panic::manager_boundary(counted, || {
            $crate::panic::ffi_fn!(@outs $($($out),*)?);
            let $m = counted.ok_or_else(|| $crate::ffi::null(stringify!($manager)))?;
            $crate::panic::ffi_fn!(@args $($($kind $arg),*)?);
            $body
        })
    }};
    (
        status;
        $(out [$($out:ident),* $(,)?];)?
        $(args [$($kind:ident $arg:ident),* $(,)?];)?
        $body:block
    ) => {{
        $crate::panic::status_boundary(|| {
            $crate::panic::ffi_fn!(@outs $($($out),*)?);
            $crate::panic::ffi_fn!(@args $($($kind $arg),*)?);
            $body
        })
    }};
    (value $fallback:expr; $body:block) => {
        $crate::panic::value_boundary($fallback, || $body)
    };
    (free $free:ident($ptr:ident)) => {
        $crate::panic::value_boundary((), || {
            // SAFETY: the exports' contract: `$ptr` is NULL or came from this
            // library and was not released yet.
            unsafe { $crate::ffi::$free($ptr) }
        })
    };
    (@outs $($out:ident),*) => {
        $(
            // SAFETY: the exports' contract: `$out` is NULL or writable.
            let $out = unsafe { $crate::ffi::out($out, stringify!($out)) }?;
        )*
    };
    (@args $($kind:ident $arg:ident),*) => {
        $(
            // SAFETY: the exports' contract: `$arg` is NULL or valid for
            // reading what `ffi::$kind` reads, for the whole call.
            let $arg = unsafe { $crate::ffi::$kind($arg, stringify!($arg)) }?;
        )*
    };
}
pub(crate) use ffi_fn;

thread_local! {
    /// The message of this thread's last failed call; `None` after a success.
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
    /// The seconds to wait after this thread's last `CG_RATE_LIMITED`; else 0.
    static LAST_RETRY_AFTER: Cell<u32> = const { Cell::new(0) };
    /// The `limit_source` of this thread's last failure when it was
    /// `InsufficientCredits`; `None` otherwise.
    static LAST_LIMIT_SOURCE: Cell<Option<LimitSource>> = const { Cell::new(None) };
}

/// Runs a fallible body: `CG_OK` and an empty last error on success, the
/// error's status and message on failure, `CG_PANIC` for a caught panic.
pub(crate) fn status_boundary(body: impl FnOnce() -> Result<(), Error>) -> cg_status {
    // AssertUnwindSafe: after a panic the caller gets CG_PANIC and the core's
    // state is behind its own transactions and non-poisoning locks.
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => {
            clear_last_error();
            set_limit_source(None);
            cg_status::CG_OK
        }
        Ok(Err(e)) => {
            set_last_error(&e.to_string());
            set_limit_source(match &e {
                Error::InsufficientCredits { limit_source, .. } => Some(*limit_source),
                _ => None,
            });
            let retry_after = match &e {
                Error::RateLimited { retry_after_seconds, .. } => *retry_after_seconds,
                _ => 0,
            };
            let _ = LAST_RETRY_AFTER.try_with(|c| c.set(retry_after));
            cg_status::from(&e)
        }
        Err(payload) => {
            set_last_error(&format!("panic in creditgate: {}", panic_message(payload.as_ref())));
            set_limit_source(None);
            let _ = LAST_RETRY_AFTER.try_with(|c| c.set(0));
            cg_status::CG_PANIC
        }
    }
}

/// [`status_boundary`] for a call on a handle: also counts in the handle's
/// `errors_total` an error the core did not count (a NULL or non-UTF-8
/// argument caught by [`crate::ffi`]), so every error a C caller gets is
/// counted once, by code. `manager` is `None` for a NULL handle.
pub(crate) fn manager_boundary(manager: Option<&CreditManager>, body: impl FnOnce() -> Result<(), Error>) -> cg_status {
    CreditManager::begin_front_door_call();
    status_boundary(|| {
        body().inspect_err(|e| {
            if let Some(m) = manager {
                m.count_front_door_error(e.code());
            }
        })
    })
}

/// Runs an infallible body; a caught panic yields `fallback`.
pub(crate) fn value_boundary<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.as_str()
    } else {
        "(no message)"
    }
}

fn set_last_error(message: &str) {
    // Messages never contain NUL (the core escapes user input with {:?}),
    // but a C string must not, whatever happens.
    let message = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // try_with: during thread teardown the slot may be gone; then there is
    // nobody left to read the message.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = Some(message));
}

fn clear_last_error() {
    let _ = LAST_RETRY_AFTER.try_with(|c| c.set(0));
    let _ = LAST_ERROR.try_with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_some() {
            *slot = None;
        }
    });
}

/// The retry-after seconds of this thread's last failed call (0 unless it
/// was `CG_RATE_LIMITED`).
pub(crate) fn last_retry_after() -> u32 {
    LAST_RETRY_AFTER.try_with(Cell::get).unwrap_or(0)
}

fn set_limit_source(source: Option<LimitSource>) {
    let _ = LAST_LIMIT_SOURCE.try_with(|slot| slot.set(source));
}

/// "account", "key", "member" or "project" after an
/// `InsufficientCredits` failure on this thread, "" otherwise. Static
/// strings.
pub(crate) fn last_limit_source_ptr() -> *const c_char {
    match LAST_LIMIT_SOURCE.try_with(Cell::get).ok().flatten() {
        Some(LimitSource::Key) => c"key".as_ptr(),
        Some(LimitSource::Member) => c"member".as_ptr(),
        Some(LimitSource::Project) => c"project".as_ptr(),
        // Account, and any source this binding does not know: the
        // account's available credits, the limit every caller knows.
        Some(_) => c"account".as_ptr(),
        None => c"".as_ptr(),
    }
}

/// The last error of this thread, or "" after a success. The pointer stays
/// valid until the next status-returning call on this thread.
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.try_with(|slot| slot.borrow().as_ref().map_or(c"".as_ptr(), |m| m.as_ptr())).unwrap_or(c"".as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last_error() -> String {
        // SAFETY: never NULL, NUL-terminated, valid until the next call.
        unsafe { CStr::from_ptr(last_error_ptr()) }.to_str().unwrap().to_string()
    }

    #[test]
    fn panics_become_cg_panic_with_a_message() {
        let s = status_boundary(|| panic!("boom {}", 42));
        assert_eq!(s, cg_status::CG_PANIC);
        assert_eq!(last_error(), "panic in creditgate: boom 42");
        assert_eq!(status_boundary(|| Ok(())), cg_status::CG_OK);
        assert_eq!(last_error(), "");
        assert_eq!(value_boundary(7u16, || panic!("x")), 7);
    }

    /// An export as the crate writes them, on a NULL handle.
    fn on_null_handle(value_out: *mut i64, name: *const c_char) -> cg_status {
        let manager: *const crate::cg_manager = std::ptr::null();
        ffi_fn!(handle manager => m; out [value_out]; args [text name]; {
            value_out.write(m.get_balance(name)?.micros());
            Ok(())
        })
    }

    #[test]
    fn ffi_fn_resets_out_pointers_before_it_checks_the_handle() {
        let mut value: i64 = 42;
        assert_eq!(on_null_handle(&mut value, std::ptr::null()), cg_status::CG_INVALID_ARGUMENT);
        assert_eq!(value, 0, "reset first, even though the handle is NULL");
        assert_eq!(last_error(), "invalid argument: manager is NULL");
        assert_eq!(on_null_handle(std::ptr::null_mut(), std::ptr::null()), cg_status::CG_INVALID_ARGUMENT);
        assert_eq!(last_error(), "invalid argument: value_out is NULL");
    }

    #[test]
    fn ffi_fn_catches_panics_in_every_form() {
        let text: *const c_char = c"x".as_ptr();
        assert_eq!(ffi_fn!(status; args [text text]; { panic!("boom in {text}") }), cg_status::CG_PANIC);
        assert_eq!(last_error(), "panic in creditgate: boom in x");
        assert_eq!(ffi_fn!(value 7u16; { panic!("x") }), 7);
    }

    #[test]
    fn errors_set_the_thread_local_message() {
        let s = status_boundary(|| Err(Error::InvalidArgument("user_id is NULL".into())));
        assert_eq!(s, cg_status::CG_INVALID_ARGUMENT);
        assert_eq!(last_error(), "invalid argument: user_id is NULL");
        std::thread::spawn(|| assert_eq!(last_error(), "")).join().unwrap();
        let s = status_boundary(|| {
            Err(Error::InsufficientCredits {
                required: creditgate_core::Credits::from_micros(2),
                available: creditgate_core::Credits::from_micros(1),
                limit_source: LimitSource::Key,
            })
        });
        assert_eq!(s, cg_status::CG_INSUFFICIENT_CREDITS);
        // SAFETY: a static NUL-terminated string.
        let source = unsafe { CStr::from_ptr(last_limit_source_ptr()) };
        assert_eq!(source.to_str().unwrap(), "key");
        for (limit_source, name) in [(LimitSource::Member, "member"), (LimitSource::Project, "project")] {
            let e = Error::InsufficientCredits {
                required: creditgate_core::Credits::from_micros(2),
                available: creditgate_core::Credits::from_micros(1),
                limit_source,
            };
            assert_eq!(status_boundary(|| Err(e)), cg_status::CG_INSUFFICIENT_CREDITS);
            // SAFETY: a static NUL-terminated string.
            assert_eq!(unsafe { CStr::from_ptr(last_limit_source_ptr()) }.to_str().unwrap(), name);
        }
        let s = status_boundary(|| Err(Error::Internal("a\0b".into())));
        // SAFETY: as above.
        assert_eq!(unsafe { CStr::from_ptr(last_limit_source_ptr()) }.to_str().unwrap(), "");
        assert_eq!(s, cg_status::CG_INTERNAL);
        assert_eq!(last_error(), "internal error: a\\0b");
    }
}
