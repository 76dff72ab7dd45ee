/*
 * Organisation wallets and allowances (issue 19) through the C API: members
 * charging the organisation, budgets refusing with their limit source,
 * projects, allowances; and every new function's NULL and invalid
 * arguments with their documented status and reset out-pointers.
 */
#include "harness.h"

static const char BAD_UTF8[] = "al\xff" "ice";

/* Fills an out value with garbage before a call. */
#define GARBAGE(x) memset(&(x), 0xA5, sizeof(x))

/* `acme` pays $5 (5,000 credits) and takes `bob` as a member; bob creates
 * a key, decided on acme's credits. */
static char *org_with_member(cg_manager *m, cg_api_key *key) {
    cg_entry e;
    CHECK_OK(cg_record_payment(m, "acme", "pi_acme", 500, "USD", &e));
    CHECK_OK(cg_add_member(m, "acme", "bob"));
    char *secret = NULL;
    CHECK_OK(cg_create_api_key(m, "bob", "bob's", &secret, key));
    return secret;
}

static void test_members_charge_the_org(void) {
    cg_manager *m = open_temp();
    cg_api_key key;
    char *secret = org_with_member(m, &key);
    CHECK(secret != NULL);
    CHECK_OK(cg_add_member(m, "acme", "bob")); /* idempotent */
    CHECK_OK(cg_set_model_price(m, "m", CREDITS(1), 0));

    cg_verification v;
    CHECK_OK(cg_verify_api_key_credits(m, secret, CG_MICROS_PER_CREDIT, &v));
    CHECK(strcmp(v.user_id, "bob") == 0);
    CHECK_EQ_I64(v.available_micros, CREDITS(5000)); /* acme's credits, not bob's 0 */
    CHECK(!v.has_key_remaining && !v.has_member_remaining && !v.has_project_remaining);

    cg_usage_charge c;
    CHECK_OK(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 3000, .model = "m"}, "r1", &c));
    CHECK_EQ_I64(c.charged_micros, CREDITS(3));
    CHECK(strcmp(c.user_id, "acme") == 0);
    int64_t balance = -1;
    CHECK_OK(cg_balance(m, "acme", &balance));
    CHECK_EQ_I64(balance, CREDITS(4997));
    CHECK_OK(cg_balance(m, "bob", &balance));
    CHECK_EQ_I64(balance, 0);

    char *json = NULL;
    CHECK_OK(cg_members_json(m, "acme", &json));
    CHECK_CONTAINS(json, "\"user_id\":\"bob\"");
    CHECK_CONTAINS(json, "\"org_id\":\"acme\"");
    CHECK_CONTAINS(json, "\"budget\":null");
    cg_string_free(json);
    CHECK_OK(cg_member_transactions_json(m, "acme", "bob", 0, NULL, &json));
    CHECK(count_of(json, "\"kind\":\"usage\"") == 1);
    CHECK_CONTAINS(json, "\"member_id\":\"bob\"");
    CHECK_CONTAINS(json, key.key_id);
    cg_string_free(json);
    CHECK_OK(cg_transactions_json(m, "acme", 0, NULL, &json));
    CHECK_CONTAINS(json, "\"member_id\":\"bob\"");
    CHECK_CONTAINS(json, "\"member_id\":null"); /* the purchase */
    cg_string_free(json);
    CHECK_OK(cg_member_usage_json(m, "acme", 0, &json));
    CHECK_CONTAINS(json, "\"member_id\":\"bob\"");
    CHECK_CONTAINS(json, "\"requests\":1");
    CHECK_CONTAINS(json, "\"tokens\":3000");
    CHECK_CONTAINS(json, "\"credits_micros\":3000000");
    cg_string_free(json);
    CHECK_OK(cg_member_usage_json(m, "acme", INT64_MAX, &json)); /* nothing since the far future */
    CHECK(strcmp(json, "[]") == 0);
    cg_string_free(json);
    CHECK_OK(cg_account_json(m, "bob", &json));
    CHECK_CONTAINS(json, "\"organisation\":\"acme\"");
    cg_string_free(json);
    CHECK_OK(cg_account_json(m, "acme", &json));
    CHECK_CONTAINS(json, "\"organisation\":null");
    cg_string_free(json);
    CHECK_OK(cg_events_json(m, 0, 0, &json));
    CHECK_CONTAINS(json, "\"kind\":\"member.added\"");
    cg_string_free(json);

    /* The rules of membership. */
    CHECK_ERR(cg_add_member(m, "acme", "acme"), CG_INVALID_ARGUMENT, "itself");
    CHECK_ERR(cg_add_member(m, "other", "bob"), CG_INVALID_ARGUMENT, "remove it there first");
    CHECK_ERR(cg_add_member(m, "bob", "carol"), CG_INVALID_ARGUMENT, "do not nest");
    CHECK_ERR(cg_add_member(m, "other", "acme"), CG_INVALID_ARGUMENT, "do not nest");
    CHECK_ERR(cg_remove_member(m, "acme", "carol"), CG_NOT_FOUND, "carol");

    /* After leaving, bob's key charges bob (who has nothing: an overdraft). */
    CHECK_OK(cg_remove_member(m, "acme", "bob"));
    CHECK_ERR(cg_remove_member(m, "acme", "bob"), CG_NOT_FOUND, "not a member");
    CHECK_OK(cg_members_json(m, "acme", &json));
    CHECK(strcmp(json, "[]") == 0);
    cg_string_free(json);
    CHECK_ERR(cg_verify_api_key_credits(m, secret, CG_MICROS_PER_CREDIT, &v), CG_INSUFFICIENT_CREDITS, "");
    CHECK(strcmp(cg_last_error_limit_source(), "account") == 0);
    CHECK_OK(cg_events_json(m, 0, 0, &json));
    CHECK_CONTAINS(json, "\"kind\":\"member.removed\"");
    cg_string_free(json);
    cg_string_free(secret);
    cg_close(m);
}

static void test_budgets(void) {
    cg_manager *m = open_temp();
    cg_api_key key;
    char *secret = org_with_member(m, &key);
    CHECK_OK(cg_set_model_price(m, "m", CREDITS(1), 0));

    CHECK_OK(cg_set_budget(m, "acme", "member", "bob", CREDITS(10), "daily", CREDITS(2)));
    cg_verification v;
    CHECK_OK(cg_verify_api_key_credits(m, secret, CREDITS(10), &v));
    CHECK(v.has_member_remaining && !v.has_project_remaining);
    CHECK_EQ_I64(v.member_remaining_micros, CREDITS(10));
    GARBAGE(v);
    CHECK_ERR(cg_verify_api_key_credits(m, secret, CREDITS(11), &v), CG_INSUFFICIENT_CREDITS, "");
    CHECK(strcmp(cg_last_error_limit_source(), "member") == 0);
    CHECK(cg_status_http(CG_INSUFFICIENT_CREDITS) == 402);
    CHECK(!v.has_member_remaining && v.available_micros == 0); /* zeroed */
    cg_hold h;
    CHECK_ERR(cg_reserve(m, secret, CREDITS(11), NULL, 0, NULL, &h), CG_INSUFFICIENT_CREDITS, "");
    CHECK(strcmp(cg_last_error_limit_source(), "member") == 0);

    /* A charge is never refused; it crosses the low threshold once. */
    cg_usage_charge c;
    CHECK_OK(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 9000, .model = "m"}, NULL, &c));
    CHECK_OK(cg_verify_api_key_credits(m, secret, 0, &v));
    CHECK_EQ_I64(v.member_remaining_micros, CREDITS(1));
    char *json = NULL;
    CHECK_OK(cg_events_json(m, 0, 0, &json));
    CHECK(count_of(json, "\"kind\":\"budget.low\"") == 1);
    CHECK(count_of(json, "\"kind\":\"budget.set\"") == 1);
    cg_string_free(json);
    CHECK_OK(cg_members_json(m, "acme", &json));
    CHECK_CONTAINS(json, "\"limit_micros\":10000000");
    CHECK_CONTAINS(json, "\"spent_micros\":9000000");
    CHECK_CONTAINS(json, "\"remaining_micros\":1000000");
    CHECK_CONTAINS(json, "\"low_threshold_micros\":2000000");
    CHECK_CONTAINS(json, "\"window\":\"daily\"");
    cg_string_free(json);

    /* A project budget, tighter than the member's: the project is the source. */
    CHECK_OK(cg_create_project(m, "acme", "search"));
    CHECK_OK(cg_create_project(m, "acme", "search")); /* idempotent */
    CHECK_OK(cg_set_key_project(m, key.key_id, "search"));
    /* The key's 9 credits were charged before it joined the project: they do
     * not count (entries record their project). 0.5 is left, below the member's 1. */
    CHECK_OK(cg_set_budget(m, "acme", "project", "search", CG_MICROS_PER_CREDIT / 2, "lifetime", 0));
    CHECK_ERR(cg_verify_api_key_credits(m, secret, CG_MICROS_PER_CREDIT, &v), CG_INSUFFICIENT_CREDITS, "");
    CHECK(strcmp(cg_last_error_limit_source(), "project") == 0);
    CHECK_OK(cg_verify_api_key_credits(m, secret, 0, &v));
    CHECK(v.has_project_remaining && v.has_member_remaining);
    CHECK_EQ_I64(v.project_remaining_micros, CG_MICROS_PER_CREDIT / 2);
    CHECK_EQ_I64(v.member_remaining_micros, CREDITS(1));
    CHECK_OK(cg_projects_json(m, "acme", &json));
    CHECK_CONTAINS(json, "\"name\":\"search\"");
    CHECK_CONTAINS(json, "\"keys\":1");
    CHECK_CONTAINS(json, "\"window\":\"lifetime\"");
    CHECK_CONTAINS(json, "\"resets_at\":null");
    cg_string_free(json);
    CHECK_OK(cg_list_api_keys_json(m, "bob", &json));
    CHECK_CONTAINS(json, "\"project\":\"search\"");
    cg_string_free(json);

    /* Removing: window NULL with 0 and 0; the member budget still binds. */
    CHECK_ERR(cg_set_budget(m, "acme", "project", "search", CREDITS(5), NULL, 0), CG_INVALID_ARGUMENT,
              "removes the budget");
    CHECK_ERR(cg_set_budget(m, "acme", "project", "search", 0, NULL, 1), CG_INVALID_ARGUMENT, "removes");
    CHECK_OK(cg_set_budget(m, "acme", "project", "search", 0, NULL, 0));
    CHECK_ERR(cg_verify_api_key_credits(m, secret, CREDITS(2), &v), CG_INSUFFICIENT_CREDITS, "");
    CHECK(strcmp(cg_last_error_limit_source(), "member") == 0);
    CHECK_OK(cg_set_key_project(m, key.key_id, NULL));
    CHECK_OK(cg_projects_json(m, "acme", &json));
    CHECK_CONTAINS(json, "\"keys\":0");
    CHECK_CONTAINS(json, "\"budget\":null");
    cg_string_free(json);

    /* Errors. */
    CHECK_ERR(cg_set_budget(m, "acme", "team", "bob", CREDITS(1), "daily", 0), CG_INVALID_ARGUMENT, "scope");
    CHECK_ERR(cg_set_budget(m, "acme", "member", "bob", CREDITS(1), "hourly", 0), CG_INVALID_ARGUMENT, "window");
    CHECK_ERR(cg_set_budget(m, "acme", "member", "bob", -1, "daily", 0), CG_INVALID_ARGUMENT, "limit");
    CHECK_ERR(cg_set_budget(m, "acme", "member", "bob", CREDITS(1), "daily", CREDITS(2)), CG_INVALID_ARGUMENT,
              "low_threshold");
    CHECK_ERR(cg_set_budget(m, "acme", "member", "carol", CREDITS(1), "daily", 0), CG_NOT_FOUND, "carol");
    CHECK_ERR(cg_set_budget(m, "acme", "project", "nope", CREDITS(1), "daily", 0), CG_NOT_FOUND, "nope");
    CHECK_ERR(cg_set_key_project(m, key.key_id, "nope"), CG_NOT_FOUND, "nope");
    CHECK_ERR(cg_set_key_project(m, "00000000-0000-0000-0000-000000000000", NULL), CG_NOT_FOUND, "");
    CHECK_ERR(cg_create_project(m, "bob", "p"), CG_INVALID_ARGUMENT, "member of");
    cg_string_free(secret);
    cg_close(m);
}

static void test_allowances(void) {
    cg_manager *m = open_temp();
    cg_api_key key;
    char *secret = org_with_member(m, &key);
    int64_t id = -1, member_id = -1, balance = 0;

    CHECK_OK(cg_set_allowance(m, "acme", CREDITS(100), "monthly", NULL, &id));
    CHECK(id > 0);
    CHECK_OK(cg_balance(m, "acme", &balance));
    CHECK_EQ_I64(balance, CREDITS(5100)); /* the current period's grant at once */
    cg_allowance_options o = {0};
    o.member_id = "bob";
    o.rollover_cap_micros = CREDITS(300);
    CHECK_OK(cg_set_allowance(m, "acme", CREDITS(50), "weekly", &o, &member_id));
    CHECK(member_id > id);

    char *json = NULL;
    char needle[64];
    CHECK_OK(cg_allowances_json(m, "acme", &json));
    CHECK(count_of(json, "\"allowance_id\":") == 2);
    snprintf(needle, sizeof needle, "\"allowance_id\":%" PRId64 ",", id);
    CHECK_CONTAINS(json, needle);
    CHECK_CONTAINS(json, "\"period\":\"monthly\"");
    CHECK_CONTAINS(json, "\"rollover_cap_micros\":null");
    CHECK_CONTAINS(json, "\"member_id\":\"bob\"");
    CHECK_CONTAINS(json, "\"rollover_cap_micros\":300000000");
    CHECK_CONTAINS(json, "\"amount_micros\":50000000");
    cg_string_free(json);
    CHECK_OK(cg_account_json(m, "acme", &json));
    snprintf(needle, sizeof needle, "\"allowance_id\":%" PRId64, member_id);
    CHECK_CONTAINS(json, needle);
    CHECK_CONTAINS(json, "\"member_id\":\"bob\""); /* the member's grant is scoped */
    cg_string_free(json);
    CHECK_OK(cg_report_json(m, &json));
    CHECK_CONTAINS(json, "\"allowance_issued_micros\":150000000");
    CHECK_CONTAINS(json, "\"allowance_used_micros\":0");
    cg_string_free(json);
    CHECK_OK(cg_expire_grants(m, 0, &json));
    CHECK_CONTAINS(json, "\"refills\":0"); /* nothing due yet */
    cg_string_free(json);

    /* A key-scoped allowance; the argument rules. */
    int64_t x = 7;
    o = (cg_allowance_options){.key_id = key.key_id};
    CHECK_OK(cg_set_allowance(m, "acme", CREDITS(1), "daily", &o, &x));
    CHECK(x > member_id);
    o = (cg_allowance_options){.member_id = "bob", .key_id = key.key_id};
    CHECK_ERR(cg_set_allowance(m, "acme", CREDITS(1), "daily", &o, &x), CG_INVALID_ARGUMENT, "not both");
    CHECK_EQ_I64(x, 0);
    CHECK_ERR(cg_set_allowance(m, "acme", CREDITS(1), "lifetime", NULL, &x), CG_INVALID_ARGUMENT, "lifetime");
    CHECK_ERR(cg_set_allowance(m, "acme", 0, "daily", NULL, &x), CG_INVALID_ARGUMENT, "amount");
    o = (cg_allowance_options){.rollover_cap_micros = CREDITS(1)};
    CHECK_ERR(cg_set_allowance(m, "acme", CREDITS(2), "daily", &o, &x), CG_INVALID_ARGUMENT, "rollover_cap");
    o = (cg_allowance_options){.member_id = "carol"};
    CHECK_ERR(cg_set_allowance(m, "acme", CREDITS(1), "daily", &o, &x), CG_NOT_FOUND, "carol");
    o = (cg_allowance_options){.key_id = "not-a-uuid"};
    CHECK_ERR(cg_set_allowance(m, "acme", CREDITS(1), "daily", &o, &x), CG_INVALID_ARGUMENT, "");
    o = (cg_allowance_options){.key_id = "00000000-0000-0000-0000-000000000000"};
    CHECK_ERR(cg_set_allowance(m, "acme", CREDITS(1), "daily", &o, &x), CG_NOT_FOUND, "");

    /* Removing stops refills; the grant issued stays. */
    CHECK_OK(cg_remove_allowance(m, id));
    CHECK_ERR(cg_remove_allowance(m, id), CG_NOT_FOUND, "allowance");
    CHECK_ERR(cg_remove_allowance(m, 0), CG_NOT_FOUND, "allowance");
    CHECK_OK(cg_allowances_json(m, "acme", &json));
    CHECK(count_of(json, "\"allowance_id\":") == 2);
    snprintf(needle, sizeof needle, "\"allowance_id\":%" PRId64 ",", id);
    CHECK(strstr(json, needle) == NULL);
    cg_string_free(json);
    CHECK_OK(cg_balance(m, "acme", &balance));
    CHECK_EQ_I64(balance, CREDITS(5151));
    CHECK_OK(cg_events_json(m, 0, 0, &json));
    CHECK(count_of(json, "\"kind\":\"allowance.set\"") == 3);
    CHECK(count_of(json, "\"kind\":\"allowance.removed\"") == 1);
    cg_string_free(json);
    cg_string_free(secret);
    cg_close(m);
}

static void test_org_limit_constants(void) {
    CHECK(CG_MAX_MEMBERS_PER_ORG == 10000);
    CHECK(CG_MAX_PROJECTS_PER_ORG == 1000);
    CHECK(CG_MAX_ALLOWANCES_PER_ACCOUNT == 100);
    cg_manager *m = open_temp();
    char *json = (char *)1;
    CHECK_OK(cg_member_transactions_json(m, "acme", "bob", CG_MAX_PAGE_LIMIT, NULL, &json));
    CHECK(strcmp(json, "[]") == 0);
    cg_string_free(json);
    const int64_t limits[] = {INT64_MIN, -1, CG_MAX_PAGE_LIMIT + 1, 4294967296LL, INT64_MAX};
    for (size_t i = 0; i < sizeof limits / sizeof *limits; i++) {
        json = (char *)1;
        CHECK_ERR(cg_member_transactions_json(m, "acme", "bob", limits[i], NULL, &json), CG_INVALID_ARGUMENT,
                  "limit");
        CHECK(json == NULL);
    }
    CHECK_ERR(cg_member_transactions_json(m, "acme", "bob", 0, "not-an-id", &json), CG_INVALID_ARGUMENT, "");
    CHECK_ERR(cg_member_transactions_json(m, "acme", "bob", 0, "00000000-0000-0000-0000-000000000000", &json),
              CG_NOT_FOUND, "");
    cg_close(m);
}

/* NULL for every pointer of every new function, and invalid UTF-8 in each
 * string: CG_INVALID_ARGUMENT, out-pointers reset, nothing written. */
static void test_org_bad_input(void) {
    cg_manager *m = open_temp();
    const cg_status inv = CG_INVALID_ARGUMENT;
    char *s;
    int64_t id;
    for (int v = 0; v < 2; v++) {
        const char *x = v == 0 ? NULL : BAD_UTF8;
        CHECK_STATUS(cg_add_member(m, x, "bob"), inv);
        CHECK_STATUS(cg_add_member(m, "acme", x), inv);
        CHECK_STATUS(cg_remove_member(m, x, "bob"), inv);
        CHECK_STATUS(cg_remove_member(m, "acme", x), inv);
        s = (char *)&id;
        CHECK_STATUS(cg_members_json(m, x, &s), inv);
        CHECK(s == NULL);
        CHECK_STATUS(cg_create_project(m, x, "p"), inv);
        CHECK_STATUS(cg_create_project(m, "acme", x), inv);
        s = (char *)&id;
        CHECK_STATUS(cg_projects_json(m, x, &s), inv);
        CHECK(s == NULL);
        CHECK_STATUS(cg_set_key_project(m, x, "p"), inv);
        CHECK_STATUS(cg_set_budget(m, x, "member", "bob", 1, "daily", 0), inv);
        CHECK_STATUS(cg_set_budget(m, "acme", x, "bob", 1, "daily", 0), inv);
        CHECK_STATUS(cg_set_budget(m, "acme", "member", x, 1, "daily", 0), inv);
        s = (char *)&id;
        CHECK_STATUS(cg_member_transactions_json(m, x, "bob", 0, NULL, &s), inv);
        CHECK(s == NULL);
        CHECK_STATUS(cg_member_transactions_json(m, "acme", x, 0, NULL, &s), inv);
        s = (char *)&id;
        CHECK_STATUS(cg_member_usage_json(m, x, 0, &s), inv);
        CHECK(s == NULL);
        id = 42;
        CHECK_STATUS(cg_set_allowance(m, x, CREDITS(1), "daily", NULL, &id), inv);
        CHECK_EQ_I64(id, 0);
        CHECK_STATUS(cg_set_allowance(m, "acme", CREDITS(1), x, NULL, &id), inv);
        s = (char *)&id;
        CHECK_STATUS(cg_allowances_json(m, x, &s), inv);
        CHECK(s == NULL);
    }
    /* Optional strings: invalid UTF-8 is refused, NULL is "not given". */
    CHECK_ERR(cg_set_key_project(m, "00000000-0000-0000-0000-000000000000", BAD_UTF8), inv, "project");
    CHECK_ERR(cg_set_budget(m, "acme", "member", "bob", 1, BAD_UTF8, 0), inv, "window");
    CHECK_ERR(cg_member_transactions_json(m, "acme", "bob", 0, BAD_UTF8, &s), inv, "before");
    CHECK_ERR(cg_set_allowance(m, "acme", CREDITS(1), "daily", &(cg_allowance_options){.member_id = BAD_UTF8}, &id),
              inv, "member_id");
    CHECK_ERR(cg_set_allowance(m, "acme", CREDITS(1), "daily", &(cg_allowance_options){.key_id = BAD_UTF8}, &id),
              inv, "key_id");
    /* NULL handles and out-pointers. */
    CHECK_ERR(cg_add_member(NULL, "acme", "bob"), inv, "manager is NULL");
    CHECK_ERR(cg_remove_member(NULL, "acme", "bob"), inv, "manager is NULL");
    s = (char *)&id;
    CHECK_ERR(cg_members_json(NULL, "acme", &s), inv, "manager is NULL");
    CHECK(s == NULL);
    CHECK_ERR(cg_members_json(m, "acme", NULL), inv, "json_out is NULL");
    CHECK_ERR(cg_create_project(NULL, "acme", "p"), inv, "manager is NULL");
    CHECK_ERR(cg_projects_json(NULL, "acme", &s), inv, "manager is NULL");
    CHECK_ERR(cg_projects_json(m, "acme", NULL), inv, "json_out is NULL");
    CHECK_ERR(cg_set_key_project(NULL, "00000000-0000-0000-0000-000000000000", NULL), inv, "manager is NULL");
    CHECK_ERR(cg_set_budget(NULL, "acme", "member", "bob", 1, "daily", 0), inv, "manager is NULL");
    CHECK_ERR(cg_member_transactions_json(NULL, "acme", "bob", 0, NULL, &s), inv, "manager is NULL");
    CHECK_ERR(cg_member_transactions_json(m, "acme", "bob", 0, NULL, NULL), inv, "json_out is NULL");
    CHECK_ERR(cg_member_usage_json(NULL, "acme", 0, &s), inv, "manager is NULL");
    CHECK_ERR(cg_member_usage_json(m, "acme", 0, NULL), inv, "json_out is NULL");
    id = 42;
    CHECK_ERR(cg_set_allowance(NULL, "acme", CREDITS(1), "daily", NULL, &id), inv, "manager is NULL");
    CHECK_EQ_I64(id, 0);
    CHECK_ERR(cg_set_allowance(m, "acme", CREDITS(1), "daily", NULL, NULL), inv, "allowance_id_out is NULL");
    CHECK_ERR(cg_remove_allowance(NULL, 1), inv, "manager is NULL");
    CHECK_ERR(cg_allowances_json(NULL, "acme", &s), inv, "manager is NULL");
    CHECK_ERR(cg_allowances_json(m, "acme", NULL), inv, "json_out is NULL");
    CHECK(s == NULL);
    /* Nothing was written: no member, project, budget or allowance. */
    CHECK_OK(cg_members_json(m, "acme", &s));
    CHECK(strcmp(s, "[]") == 0);
    cg_string_free(s);
    CHECK_OK(cg_projects_json(m, "acme", &s));
    CHECK(strcmp(s, "[]") == 0);
    cg_string_free(s);
    CHECK_OK(cg_allowances_json(m, "acme", &s));
    CHECK(strcmp(s, "[]") == 0);
    cg_string_free(s);
    CHECK_OK(cg_events_json(m, 0, 0, &s));
    CHECK(strcmp(s, "[]") == 0);
    cg_string_free(s);
    cg_close(m);
}

int main(void) {
    harness_env();
    RUN(test_members_charge_the_org);
    RUN(test_budgets);
    RUN(test_allowances);
    RUN(test_org_limit_constants);
    RUN(test_org_bad_input);
    remove_temp_dbs();
    return harness_summary("test_orgs");
}
