//! All pointer plumbing of the C ABI: NULL checks, C strings to `&str`,
//! out-pointer writes, handle casts, the input structs (`cg_usage`, the
//! options) read into safe values, and fixed-size string buffers. Nothing
//! else in this crate dereferences a raw pointer; the exports reach these
//! functions only through `ffi_fn!` (panic.rs).

use crate::{
    cg_allowance_options, cg_auto_topup, cg_delivery_options, cg_entry_options, cg_grant_options, cg_manager,
    cg_model_price, cg_usage, cg_usage_query, cg_webhook_request,
};
use creditgate_core::{CreditManager, Credits, Error, ModelPrice, Result, Usage};
use std::ffi::{CStr, CString, c_char};
use std::marker::PhantomData;
use std::ptr::NonNull;

/// The error of a NULL required pointer.
pub(crate) fn null(name: &str) -> Error {
    Error::InvalidArgument(format!("{name} is NULL"))
}

/// Moves a manager to the heap; C owns it until `cg_close`.
pub(crate) fn manager_into_raw(m: CreditManager) -> *mut cg_manager {
    Box::into_raw(Box::new(m)).cast()
}

/// Borrows the manager behind a handle; `None` for NULL.
///
/// # Safety
/// `p` is NULL or a handle from `cg_open*` that was not closed.
pub(crate) unsafe fn manager<'a>(p: *const cg_manager) -> Option<&'a CreditManager> {
    // SAFETY: non-NULL handles come from `manager_into_raw` (caller's contract).
    unsafe { p.cast::<CreditManager>().as_ref() }
}

/// Takes back and drops the manager behind a handle; NULL is a no-op.
///
/// # Safety
/// `p` is NULL or a handle from `cg_open*` that was not closed.
pub(crate) unsafe fn manager_drop(p: *mut cg_manager) {
    if !p.is_null() {
        // SAFETY: the handle came from `Box::into_raw` (caller's contract).
        drop(unsafe { Box::from_raw(p.cast::<CreditManager>()) });
    }
}

/// A required NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn text<'a>(p: *const c_char, name: &str) -> Result<&'a str> {
    // SAFETY: the caller's contract.
    unsafe { opt_text(p, name) }?.ok_or_else(|| null(name))
}

/// An optional string argument: NULL is `None`.
///
/// # Safety
/// As [`text`].
pub(crate) unsafe fn opt_text<'a>(p: *const c_char, name: &str) -> Result<Option<&'a str>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL and NUL-terminated (caller's contract).
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map(Some).map_err(|e| {
        Error::InvalidArgument(format!("{name} is not valid UTF-8 (invalid byte at offset {})", e.valid_up_to()))
    })
}

/// The safe view of a `cg_entry_options`.
#[derive(Default)]
pub(crate) struct EntryArgs<'a> {
    pub(crate) idempotency_key: Option<&'a str>,
    pub(crate) reference: Option<&'a str>,
    pub(crate) metadata_json: Option<&'a str>,
}

/// An optional `cg_entry_options` argument: NULL gives none of its fields.
///
/// # Safety
/// `p` is NULL or points to a readable `cg_entry_options` whose strings are
/// NULL or NUL-terminated, all outliving `'a`.
pub(crate) unsafe fn entry_options<'a>(p: *const cg_entry_options, _name: &str) -> Result<EntryArgs<'a>> {
    // SAFETY: NULL or readable (caller's contract).
    let Some(o) = (unsafe { p.as_ref() }) else { return Ok(EntryArgs::default()) };
    // SAFETY: each string field is NULL or NUL-terminated (caller's contract).
    let idempotency_key = unsafe { opt_text(o.idempotency_key, "idempotency_key") }?;
    // SAFETY: as above.
    let reference = unsafe { opt_text(o.reference, "reference") }?;
    // SAFETY: as above.
    let metadata_json = unsafe { opt_text(o.metadata_json, "metadata_json") }?;
    Ok(EntryArgs { idempotency_key, reference, metadata_json })
}

/// The safe view of a `cg_grant_options`.
#[derive(Default)]
pub(crate) struct GrantArgs<'a> {
    pub(crate) category: Option<&'a str>,
    pub(crate) priority: i32,
    pub(crate) expires_at_micros: i64,
}

/// An optional `cg_grant_options` argument: NULL is the default grant.
///
/// # Safety
/// As [`entry_options`], for a `cg_grant_options`.
pub(crate) unsafe fn grant_options<'a>(p: *const cg_grant_options, _name: &str) -> Result<GrantArgs<'a>> {
    // SAFETY: NULL or readable (caller's contract).
    let Some(o) = (unsafe { p.as_ref() }) else { return Ok(GrantArgs::default()) };
    // SAFETY: NULL or NUL-terminated (caller's contract).
    let category = unsafe { opt_text(o.category, "category") }?;
    Ok(GrantArgs { category, priority: o.priority, expires_at_micros: o.expires_at_micros })
}

/// The safe view of a `cg_allowance_options`.
#[derive(Default)]
pub(crate) struct AllowanceArgs<'a> {
    pub(crate) member_id: Option<&'a str>,
    pub(crate) key_id: Option<&'a str>,
    pub(crate) rollover_cap_micros: i64,
}

/// An optional `cg_allowance_options` argument: NULL gives none of its
/// fields.
///
/// # Safety
/// As [`entry_options`], for a `cg_allowance_options`.
pub(crate) unsafe fn allowance_options<'a>(p: *const cg_allowance_options, _name: &str) -> Result<AllowanceArgs<'a>> {
    // SAFETY: NULL or readable (caller's contract).
    let Some(o) = (unsafe { p.as_ref() }) else { return Ok(AllowanceArgs::default()) };
    // SAFETY: each string field is NULL or NUL-terminated (caller's contract).
    let member_id = unsafe { opt_text(o.member_id, "member_id") }?;
    // SAFETY: as above.
    let key_id = unsafe { opt_text(o.key_id, "key_id") }?;
    Ok(AllowanceArgs { member_id, key_id, rollover_cap_micros: o.rollover_cap_micros })
}

/// A required `cg_usage` argument, as the core's `Usage`.
///
/// # Safety
/// `p` is NULL or points to a readable `cg_usage` whose `model` is NULL or
/// NUL-terminated, all outliving `'a`.
pub(crate) unsafe fn usage<'a>(p: *const cg_usage, name: &str) -> Result<Usage<'a>> {
    // SAFETY: the caller's contract, passed on.
    unsafe { opt_usage(p, name) }?.ok_or_else(|| null(name))
}

/// An optional `cg_usage` argument: NULL is `None`.
///
/// # Safety
/// As [`usage`].
pub(crate) unsafe fn opt_usage<'a>(p: *const cg_usage, _name: &str) -> Result<Option<Usage<'a>>> {
    // SAFETY: NULL or readable (caller's contract).
    let Some(u) = (unsafe { p.as_ref() }) else { return Ok(None) };
    // SAFETY: NULL or NUL-terminated (caller's contract).
    let model = unsafe { opt_text(u.model, "model") }?;
    Ok(Some(Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        model,
        cached_input_tokens: u.cached_input_tokens,
        cache_write_tokens: u.cache_write_tokens,
    }))
}

/// A required `cg_model_price` argument, as the core's `ModelPrice`. A cache
/// price whose `has_*` flag is false must be 0: a price that would be
/// ignored is refused, not dropped.
///
/// # Safety
/// `p` is NULL or points to a readable `cg_model_price`.
pub(crate) unsafe fn model_price(p: *const cg_model_price, name: &str) -> Result<ModelPrice> {
    // SAFETY: NULL or readable (caller's contract).
    let p = unsafe { p.as_ref() }.ok_or_else(|| null(name))?;
    let optional = |has: bool, micros: i64, field: &str| match (has, micros) {
        (true, m) => Ok(Some(Credits::from_micros(m))),
        (false, 0) => Ok(None),
        (false, m) => Err(Error::InvalidArgument(format!(
            "{name}.{field}_micros is {m} but {name}.has_{field} is false (set it to give a {field} price)"
        ))),
    };
    Ok(ModelPrice {
        input_per_1k: Credits::from_micros(p.input_per_1k_micros),
        output_per_1k: Credits::from_micros(p.output_per_1k_micros),
        cached_input_per_1k: optional(p.has_cached_input_per_1k, p.cached_input_per_1k_micros, "cached_input_per_1k")?,
        cache_write_per_1k: optional(p.has_cache_write_per_1k, p.cache_write_per_1k_micros, "cache_write_per_1k")?,
        request_fee: Credits::from_micros(p.request_fee_micros),
    })
}

/// The safe view of a `cg_usage_query`.
#[derive(Default)]
pub(crate) struct QueryArgs<'a> {
    pub(crate) user_id: Option<&'a str>,
    pub(crate) key_id: Option<&'a str>,
    pub(crate) model: Option<&'a str>,
    pub(crate) since_micros: i64,
    pub(crate) until_micros: i64,
    pub(crate) group_by: Option<&'a str>,
}

/// An optional `cg_usage_query` argument: NULL gives none of its fields.
///
/// # Safety
/// As [`entry_options`], for a `cg_usage_query`.
pub(crate) unsafe fn usage_query<'a>(p: *const cg_usage_query, _name: &str) -> Result<QueryArgs<'a>> {
    // SAFETY: NULL or readable (caller's contract).
    let Some(q) = (unsafe { p.as_ref() }) else { return Ok(QueryArgs::default()) };
    // SAFETY: each string field is NULL or NUL-terminated (caller's contract).
    let user_id = unsafe { opt_text(q.user_id, "user_id") }?;
    // SAFETY: as above.
    let key_id = unsafe { opt_text(q.key_id, "key_id") }?;
    // SAFETY: as above.
    let model = unsafe { opt_text(q.model, "model") }?;
    // SAFETY: as above.
    let group_by = unsafe { opt_text(q.group_by, "group_by") }?;
    Ok(QueryArgs { user_id, key_id, model, since_micros: q.since_micros, until_micros: q.until_micros, group_by })
}

/// An optional `cg_delivery_options` argument, copied: NULL is a zeroed
/// struct (every default).
///
/// # Safety
/// `p` is NULL or points to a readable `cg_delivery_options`.
pub(crate) unsafe fn delivery_options(p: *const cg_delivery_options, _name: &str) -> Result<cg_delivery_options> {
    // SAFETY: NULL or readable (caller's contract); a struct of numbers, copied.
    let o = unsafe { p.as_ref() }.copied();
    Ok(o.unwrap_or(cg_delivery_options {
        timeout_ms: 0,
        max_attempts: 0,
        backoff_base_ms: 0,
        backoff_max_ms: 0,
        batch_size: 0,
    }))
}

/// A required `cg_auto_topup` argument, copied.
///
/// # Safety
/// `p` is NULL or points to a readable `cg_auto_topup`.
pub(crate) unsafe fn auto_topup(p: *const cg_auto_topup, name: &str) -> Result<cg_auto_topup> {
    // SAFETY: NULL or readable (caller's contract); a struct of numbers, copied.
    unsafe { p.as_ref() }.copied().ok_or_else(|| null(name))
}

/// The safe view of a `cg_webhook_request`.
pub(crate) struct WebhookRequestArgs<'a> {
    pub(crate) payload: &'a [u8],
    pub(crate) webhook_id: Option<&'a str>,
    pub(crate) webhook_timestamp: Option<&'a str>,
    pub(crate) webhook_signature: Option<&'a str>,
}

/// A required `cg_webhook_request` argument. A NULL header value is a
/// missing header (the verification says which); a NULL payload is the
/// empty body when `payload_len` is 0.
///
/// # Safety
/// `p` is NULL or points to a readable `cg_webhook_request` whose `payload`
/// is NULL or readable for `payload_len` bytes and whose strings are NULL
/// or NUL-terminated, all outliving `'a`.
pub(crate) unsafe fn webhook_request<'a>(p: *const cg_webhook_request, name: &str) -> Result<WebhookRequestArgs<'a>> {
    // SAFETY: NULL or readable (caller's contract).
    let r = unsafe { p.as_ref() }.ok_or_else(|| null(name))?;
    let payload = match (r.payload.is_null(), r.payload_len) {
        (true, 0) => &[][..],
        (true, len) => return Err(Error::InvalidArgument(format!("{name}.payload is NULL but payload_len is {len}"))),
        // No object is larger (a slice must not be): a length past it is garbage.
        (false, len) if len > isize::MAX as usize => {
            return Err(Error::InvalidArgument(format!("{name}.payload_len is {len}, larger than any buffer")));
        }
        // SAFETY: non-NULL and readable for `payload_len` bytes (caller's contract).
        (false, len) => unsafe { std::slice::from_raw_parts(r.payload, len) },
    };
    // SAFETY: each string field is NULL or NUL-terminated (caller's contract).
    let webhook_id = unsafe { opt_text(r.webhook_id, "webhook_id") }?;
    // SAFETY: as above.
    let webhook_timestamp = unsafe { opt_text(r.webhook_timestamp, "webhook_timestamp") }?;
    // SAFETY: as above.
    let webhook_signature = unsafe { opt_text(r.webhook_signature, "webhook_signature") }?;
    Ok(WebhookRequestArgs { payload, webhook_id, webhook_timestamp, webhook_signature })
}

/// Values an out-pointer is set to before the call does anything, so that
/// on failure the caller finds NULL or a zeroed struct, never garbage.
pub(crate) trait OutValue: Sized {
    const EMPTY: Self;
}

impl OutValue for i64 {
    const EMPTY: i64 = 0;
}

impl OutValue for bool {
    const EMPTY: bool = false;
}

impl<T> OutValue for *mut T {
    const EMPTY: *mut T = std::ptr::null_mut();
}

/// A checked, non-NULL out-pointer.
pub(crate) struct Out<'a, T: OutValue> {
    ptr: NonNull<T>,
    _borrow: PhantomData<&'a mut T>,
}

impl<T: OutValue> Out<'_, T> {
    pub(crate) fn write(self, value: T) {
        // SAFETY: checked non-NULL in `out`, writable (caller's contract);
        // `write` drops nothing, as the target may hold garbage.
        unsafe { self.ptr.as_ptr().write(value) }
    }
}

/// Checks an out-pointer and sets it to its empty value.
///
/// # Safety
/// `p` is NULL or valid for writing one `T`.
pub(crate) unsafe fn out<'a, T: OutValue>(p: *mut T, name: &str) -> Result<Out<'a, T>> {
    let ptr = NonNull::new(p).ok_or_else(|| null(name))?;
    // SAFETY: writable (caller's contract).
    unsafe { ptr.as_ptr().write(T::EMPTY) };
    Ok(Out { ptr, _borrow: PhantomData })
}

/// An optional out-pointer: NULL is `None`, anything else is checked and
/// emptied as by [`out`].
///
/// # Safety
/// As [`out`].
pub(crate) unsafe fn opt_out<'a, T: OutValue>(p: *mut T, name: &str) -> Result<Option<Out<'a, T>>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's contract, passed on.
    unsafe { out(p, name) }.map(Some)
}

/// Hands a string to C; it is freed with `cg_string_free` ([`string_free`]).
pub(crate) fn string_into_raw(s: String) -> Result<*mut c_char> {
    CString::new(s).map(CString::into_raw).map_err(|_| Error::Internal("a returned string contains a NUL byte".into()))
}

/// Frees a string from [`string_into_raw`], zeroing it first (it may be an
/// API key secret); NULL is a no-op.
///
/// # Safety
/// `p` is NULL or came from [`string_into_raw`] and was not freed.
pub(crate) unsafe fn string_free(p: *mut c_char) {
    if p.is_null() {
        return;
    }
    // SAFETY: allocated by `CString::into_raw` (caller's contract).
    let s = unsafe { CString::from_raw(p) };
    let mut bytes = s.into_bytes_with_nul();
    for b in bytes.iter_mut() {
        // SAFETY: a valid &mut u8; volatile so the zeroing is not elided.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
}

/// Copies `s` into a fixed buffer of a result struct, NUL-terminated.
pub(crate) fn fill<const N: usize>(buf: &mut [c_char; N], s: &str) -> Result<()> {
    if s.len() >= N || s.contains('\0') {
        return Err(Error::Internal(format!("a {}-byte value does not fit a {N}-byte buffer", s.len())));
    }
    for (dst, &src) in buf.iter_mut().zip(s.as_bytes()) {
        *dst = src as c_char;
    }
    buf[s.len()] = 0;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_nulls() {
        // SAFETY: NULL (never read).
        let e = unsafe { text(std::ptr::null(), "user_id") }.unwrap_err().to_string();
        assert!(e.contains("user_id is NULL"), "{e}");
        // SAFETY: NULL (never read).
        assert_eq!(unsafe { opt_text(std::ptr::null(), "x") }.unwrap(), None);
        let bad = c"ab\xffc";
        // SAFETY: a NUL-terminated literal.
        let e = unsafe { text(bad.as_ptr(), "user_id") }.unwrap_err().to_string();
        assert!(e.contains("user_id is not valid UTF-8") && e.contains("offset 2"), "{e}");
        // SAFETY: a NUL-terminated literal.
        assert_eq!(unsafe { text(c"alice".as_ptr(), "user_id") }.unwrap(), "alice");
    }

    #[test]
    fn model_prices_refuse_an_ignored_cache_price() {
        let mut p = crate::cg_model_price {
            input_per_1k_micros: 3,
            output_per_1k_micros: 4,
            has_cached_input_per_1k: false,
            cached_input_per_1k_micros: 0,
            has_cache_write_per_1k: true,
            cache_write_per_1k_micros: 0,
            request_fee_micros: 5,
        };
        // SAFETY: a local, readable.
        let price = unsafe { model_price(&p, "price") }.unwrap();
        assert_eq!(price.cached_input_per_1k, None);
        assert_eq!(price.cache_write_per_1k, Some(Credits::ZERO)); // 0 with its flag is a price
        assert_eq!((price.input_per_1k.micros(), price.request_fee.micros()), (3, 5));
        p.cached_input_per_1k_micros = 9;
        // SAFETY: as above.
        let e = unsafe { model_price(&p, "price") }.unwrap_err().to_string();
        assert!(e.contains("price.cached_input_per_1k_micros is 9 but price.has_cached_input_per_1k is false"), "{e}");
        // SAFETY: NULL (never read).
        let e = unsafe { model_price(std::ptr::null(), "price") }.unwrap_err().to_string();
        assert!(e.contains("price is NULL"), "{e}");
    }

    #[test]
    fn fill_checks_the_size() {
        let mut buf = [1 as c_char; 4];
        fill(&mut buf, "abc").unwrap();
        assert_eq!(buf, [b'a' as c_char, b'b' as c_char, b'c' as c_char, 0]);
        assert!(fill(&mut buf, "abcd").is_err());
    }

    #[test]
    fn out_pointers_are_checked_and_emptied() {
        let mut v: i64 = 42;
        // SAFETY: a local, writable.
        let o = unsafe { out(&mut v as *mut i64, "balance_out") }.unwrap();
        o.write(7);
        assert_eq!(v, 7);
        // SAFETY: NULL is checked before any write.
        let e = unsafe { out(std::ptr::null_mut::<i64>(), "balance_out") }.err().unwrap().to_string();
        assert!(e.contains("balance_out is NULL"));
        let mut s: *mut c_char = std::ptr::dangling_mut(); // garbage the call must reset
        // SAFETY: a local, writable.
        let o = unsafe { out(&mut s as *mut *mut c_char, "json_out") }.unwrap();
        assert!(s.is_null());
        o.write(string_into_raw("x".into()).unwrap());
        // SAFETY: from `string_into_raw`, freed once.
        unsafe { string_free(s) };
        // SAFETY: NULL is a no-op.
        unsafe { string_free(std::ptr::null_mut()) };
    }
}
