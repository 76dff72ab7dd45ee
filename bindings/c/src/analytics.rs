//! Usage summaries and account statements, in the core's one JSON and one
//! CSV form (`creditgate::usage_rows_json`, `Statement::to_json`, ...).

use super::*;

/// Requests, tokens and credits of the usage (entries of kind `usage`)
/// `query` selects, grouped by its `group_by`, as a JSON array of rows
/// ordered by the groups. Each row has the grouped fields (`"day"`: the UTC
/// date `"YYYY-MM-DD"`; `"model"`; `"key"`: a key id; `"member"`;
/// `"project"`; a grouped field the usage has none of, such as the member
/// outside an organisation, is null and sorts last), then `requests`, `input_tokens` (whole prompts, cache
/// reads and writes included), `output_tokens`, `cached_input_tokens`,
/// `cache_write_tokens` and `credits_micros`. `query`: a `cg_usage_query`,
/// or NULL for one row of totals over all usage. More than
/// `CG_MAX_SUMMARY_ROWS` rows: `CG_LIMIT_REACHED`.
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_usage_summary_json(
    manager: *const cg_manager,
    query: *const cg_usage_query,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; args [usage_query query]; {
        let q = core_query(&query)?;
        json_out.write(ffi::string_into_raw(usage_rows_json(&q.group_by, &m.usage_summary(&q)?))?);
        Ok(())
    })
}

/// `cg_usage_summary_json` as CSV (RFC 4180): a header row of the grouped
/// columns, in `group_by`'s order, then `requests`, `input_tokens`,
/// `output_tokens`, `cached_input_tokens`, `cache_write_tokens`, `credits`
/// (exact decimal credits, e.g. `1.5`); one row per group. A text cell a
/// spreadsheet would run as a formula starts with `'`.
///
/// `csv_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_usage_summary_csv(
    manager: *const cg_manager,
    query: *const cg_usage_query,
    csv_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [csv_out]; args [usage_query query]; {
        let q = core_query(&query)?;
        csv_out.write(ffi::string_into_raw(usage_rows_csv(&q.group_by, &m.usage_summary(&q)?))?);
        Ok(())
    })
}

/// `user_id`'s statement over `[since_micros, until_micros)` (microseconds
/// since the Unix epoch, UTC; each means its value, 0 the epoch; `since`
/// after `until` is `CG_INVALID_ARGUMENT`) as a JSON object: `user_id`,
/// `since`, `until`, `opening_balance_micros` (the balance before
/// `since`), `closing_balance_micros` (before `until`) and `lines`, each
/// `{"kind", "model", "price", "entries", "input_tokens", "output_tokens",
/// "cached_input_tokens", "cache_write_tokens", "amount_micros"}`: one line
/// per kind of movement, usage split by model and rates (`price` as in
/// `cg_list_model_prices_json`; null for other kinds and for settles of a
/// credit amount). `opening_balance_micros` plus every line's
/// `amount_micros` is `closing_balance_micros`, exactly.
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_statement_json(
    manager: *const cg_manager,
    user_id: *const c_char,
    since_micros: i64,
    until_micros: i64,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; args [text user_id]; {
        let s = m.statement(user_id, Timestamp(since_micros), Timestamp(until_micros))?;
        json_out.write(ffi::string_into_raw(s.to_json())?);
        Ok(())
    })
}

/// `cg_statement_json` as CSV (RFC 4180): a header row (`kind`, `model`,
/// `input_per_1k`, `output_per_1k`, `cached_input_per_1k`,
/// `cache_write_per_1k`, `request_fee`, `entries`, `input_tokens`,
/// `output_tokens`, `cached_input_tokens`, `cache_write_tokens`,
/// `amount`), an `opening` row, one row per line and a `closing` row;
/// prices and amounts in exact decimal credits.
///
/// `csv_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_statement_csv(
    manager: *const cg_manager,
    user_id: *const c_char,
    since_micros: i64,
    until_micros: i64,
    csv_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [csv_out]; args [text user_id]; {
        let s = m.statement(user_id, Timestamp(since_micros), Timestamp(until_micros))?;
        csv_out.write(ffi::string_into_raw(s.to_csv())?);
        Ok(())
    })
}

/// The core's query of a `cg_usage_query`'s safe view: 0 and NULL are "not
/// given", `group_by` a comma-separated list of group names (spaces
/// around a name are ignored).
fn core_query(q: &ffi::QueryArgs) -> Result<UsageQuery> {
    let time = |micros: i64| (micros != 0).then_some(Timestamp(micros));
    let group_by = match q.group_by {
        None | Some("") => Vec::new(),
        Some(list) => list.split(',').map(|g| UsageGroup::parse(g.trim())).collect::<Result<_>>()?,
    };
    Ok(UsageQuery {
        user_id: q.user_id.map(str::to_string),
        api_key_id: q.key_id.map(KeyId::parse).transpose()?,
        model: q.model.map(str::to_string),
        since: time(q.since_micros),
        until: time(q.until_micros),
        group_by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(list: Option<&str>) -> Result<Vec<UsageGroup>> {
        core_query(&ffi::QueryArgs { group_by: list, ..Default::default() }).map(|q| q.group_by)
    }

    #[test]
    fn group_lists_parse_in_order() {
        assert_eq!(groups(None).unwrap(), vec![]);
        assert_eq!(groups(Some("")).unwrap(), vec![]);
        assert_eq!(
            groups(Some(" project , day,key")).unwrap(),
            vec![UsageGroup::Project, UsageGroup::Day, UsageGroup::Key]
        );
        for bad in ["day,", ",day", "day,,model", "Day", "day;model", "region"] {
            let e = groups(Some(bad)).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad}: {e}");
            assert!(e.to_string().contains("day, model, key, member, project"), "{bad}: {e}");
        }
    }

    #[test]
    fn zero_and_null_are_not_given() {
        let q = core_query(&ffi::QueryArgs::default()).unwrap();
        assert_eq!(q, UsageQuery::default());
        let key = "0190a0a0-0000-7000-8000-000000000001";
        let q = core_query(&ffi::QueryArgs {
            user_id: Some("alice"),
            key_id: Some(key),
            model: Some("m"),
            since_micros: -5,
            until_micros: 7,
            group_by: Some("model"),
        })
        .unwrap();
        assert_eq!(q.user_id.as_deref(), Some("alice"));
        assert_eq!(q.api_key_id.map(|k| k.to_string()).as_deref(), Some(key));
        assert_eq!((q.since, q.until), (Some(Timestamp(-5)), Some(Timestamp(7))));
        assert!(core_query(&ffi::QueryArgs { key_id: Some("sk_live"), ..Default::default() }).is_err());
    }
}
