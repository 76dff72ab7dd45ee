/*
 * Auto top-up (issue 21) through the C API: a rule, a crossing requesting a
 * top-up once, paid with cg_record_payment under its id (once, also when
 * the payment is replayed), a failed payment, the rule and this month's
 * top-ups in the account JSON; and every new function's NULL and invalid
 * arguments with their documented status and reset out-pointers.
 */
#include "harness.h"

static const char BAD_UTF8[] = "al\xff" "ice";

/* Copies the first top-up id ("tu_" + 32 hex) of `json` into `id`. */
static void first_topup_id(const char *json, char id[CG_ID_SIZE]) {
    id[0] = '\0';
    const char *p = json ? strstr(json, "\"id\":\"tu_") : NULL;
    if (p == NULL) return;
    p += strlen("\"id\":\"");
    size_t n = strcspn(p, "\"");
    if (n >= CG_ID_SIZE) return;
    memcpy(id, p, n);
    id[n] = '\0';
}

static int count_events(cg_manager *m, const char *kind) {
    char *json = NULL;
    char needle[64];
    snprintf(needle, sizeof needle, "\"kind\":\"%s\"", kind);
    CHECK_OK(cg_events_json(m, 0, CG_MAX_EVENTS_PER_PAGE, &json));
    int n = count_of(json, needle);
    cg_string_free(json);
    return n;
}

static void test_crossing_payment_and_failure(void) {
    cg_manager *m = open_temp();
    cg_entry e;
    CHECK_OK(cg_record_payment(m, "alice", "pi_1", 500, "USD", &e)); /* 5,000 credits */
    cg_auto_topup rule = {.threshold_micros = CREDITS(1000),
                          .amount_micros = CREDITS(2000),
                          .max_per_month = 3,
                          .monthly_cap_micros = CREDITS(10000)};
    cg_topup t;
    memset(&t, 0xA5, sizeof t);
    CHECK_OK(cg_set_auto_topup(m, "alice", &rule, &t));
    CHECK(t.topup_id[0] == '\0' && t.amount_micros == 0); /* above the threshold: none yet */
    char *json = NULL;
    CHECK_OK(cg_account_json(m, "alice", &json));
    CHECK_CONTAINS(json, "\"auto_topup\":{");
    CHECK_CONTAINS(json, "\"threshold_micros\":1000000000");
    CHECK_CONTAINS(json, "\"amount_micros\":2000000000");
    CHECK_CONTAINS(json, "\"target_micros\":null");
    CHECK_CONTAINS(json, "\"max_per_month\":3");
    CHECK_CONTAINS(json, "\"monthly_cap_micros\":10000000000");
    CHECK_CONTAINS(json, "\"topups_this_month\":[]");
    cg_string_free(json);

    /* Crossing below 1,000: one top-up requested, not two. */
    CHECK_OK(cg_deduct_credits(m, "alice", CREDITS(3000), NULL, &e)); /* 2,000 left */
    CHECK(count_events(m, "topup.requested") == 0);
    CHECK_OK(cg_deduct_credits(m, "alice", CREDITS(1500), NULL, &e)); /* 500: crosses */
    CHECK_OK(cg_deduct_credits(m, "alice", CREDITS(100), NULL, &e));  /* still below: no new crossing */
    CHECK(count_events(m, "topup.requested") == 1);
    CHECK_OK(cg_topups_json(m, "alice", 0, &json));
    CHECK(count_of(json, "\"id\":\"tu_") == 1);
    CHECK_CONTAINS(json, "\"status\":\"requested\"");
    CHECK_CONTAINS(json, "\"amount_micros\":2000000000");
    CHECK_CONTAINS(json, "\"entry_id\":null");
    char id[CG_ID_SIZE];
    first_topup_id(json, id);
    cg_string_free(json);
    CHECK(strlen(id) == 35);

    /* Paid under its id: credited once, also when the payment is replayed. */
    CHECK_OK(cg_record_payment(m, "alice", id, 200, "USD", &e)); /* $2 = 2,000 credits */
    CHECK(!e.replayed);
    CHECK_OK(cg_record_payment(m, "alice", id, 200, "USD", &e));
    CHECK(e.replayed);
    int64_t balance = 0;
    CHECK_OK(cg_balance(m, "alice", &balance));
    CHECK_EQ_I64(balance, CREDITS(2400));
    CHECK_OK(cg_topups_json(m, "alice", 0, &json));
    CHECK_CONTAINS(json, "\"status\":\"paid\"");
    CHECK_CONTAINS(json, e.id); /* the purchase entry that paid it */
    cg_string_free(json);
    CHECK(count_events(m, "topup.paid") == 1);
    CHECK_ERR(cg_record_topup_failure(m, id, "declined", &t), CG_IDEMPOTENCY_CONFLICT, "paid");
    CHECK(t.topup_id[0] == '\0');

    /* The next crossing; its payment fails (recorded once). */
    CHECK_OK(cg_deduct_credits(m, "alice", CREDITS(2000), NULL, &e)); /* 400: crosses */
    CHECK_OK(cg_topups_json(m, "alice", 1, &json)); /* newest first */
    char second[CG_ID_SIZE];
    first_topup_id(json, second);
    cg_string_free(json);
    CHECK(strcmp(second, id) != 0 && strlen(second) == 35);
    CHECK_OK(cg_record_topup_failure(m, second, "card declined", &t));
    CHECK(strcmp(t.topup_id, second) == 0);
    CHECK(strcmp(t.user_id, "alice") == 0);
    CHECK_EQ_I64(t.amount_micros, CREDITS(2000));
    CHECK(t.status == CG_TOPUP_FAILED);
    CHECK_OK(cg_record_topup_failure(m, second, "again", &t)); /* idempotent */
    CHECK(t.status == CG_TOPUP_FAILED);
    CHECK(count_events(m, "topup.failed") == 1);
    CHECK_ERR(cg_record_topup_failure(m, "tu_00000000000000000000000000000000", "x", &t), CG_NOT_FOUND, "tu_0");

    /* The account shows the month's top-ups, the failed one with its reason. */
    CHECK_OK(cg_account_json(m, "alice", &json));
    CHECK(count_of(json, "\"id\":\"tu_") == 2);
    CHECK_CONTAINS(json, "\"reason\":\"card declined\"");
    CHECK_CONTAINS(json, "\"status\":\"failed\"");
    CHECK_CONTAINS(json, "\"status\":\"paid\"");
    cg_string_free(json);

    /* Removed: no more crossings; the account shows no rule. */
    bool removed = false;
    CHECK_OK(cg_remove_auto_topup(m, "alice", &removed));
    CHECK(removed);
    CHECK_OK(cg_remove_auto_topup(m, "alice", &removed));
    CHECK(!removed);
    CHECK_OK(cg_add_credits(m, "alice", CREDITS(5000), NULL, NULL, &e));
    CHECK_OK(cg_deduct_credits(m, "alice", CREDITS(5000), NULL, &e));
    CHECK(count_events(m, "topup.requested") == 2);
    CHECK_OK(cg_account_json(m, "alice", &json));
    CHECK_CONTAINS(json, "\"auto_topup\":null");
    cg_string_free(json);
    cg_close(m);
}

static void test_rule_below_threshold_and_caps(void) {
    cg_manager *m = open_temp();
    /* Already below: up to the target at once. */
    cg_auto_topup rule = {.threshold_micros = CREDITS(10),
                          .target_micros = CREDITS(50),
                          .max_per_month = 1,
                          .monthly_cap_micros = CREDITS(40)};
    cg_topup t;
    CHECK_OK(cg_set_auto_topup(m, "bob", &rule, &t));
    CHECK(strncmp(t.topup_id, "tu_", 3) == 0);
    CHECK(strcmp(t.user_id, "bob") == 0);
    CHECK(t.status == CG_TOPUP_REQUESTED);
    CHECK_EQ_I64(t.amount_micros, CREDITS(40)); /* 50 wanted, the cap leaves 40 */
    char *json = NULL;
    CHECK_OK(cg_account_json(m, "bob", &json));
    CHECK_CONTAINS(json, "\"target_micros\":50000000");
    CHECK_CONTAINS(json, "\"amount_micros\":null");
    CHECK_CONTAINS(json, t.topup_id);
    cg_string_free(json);
    /* Set again while still below: that low balance was served: nothing asked. */
    cg_topup again;
    CHECK_OK(cg_set_auto_topup(m, "bob", &rule, &again));
    CHECK(again.topup_id[0] == '\0');
    CHECK(count_events(m, "topup.skipped") == 0);
    /* Its payment failed; the rule set anew while below: max_per_month (1) is used up: skipped. */
    cg_topup failed;
    CHECK_OK(cg_record_topup_failure(m, t.topup_id, "card_declined", &failed));
    CHECK(failed.status == CG_TOPUP_FAILED);
    bool removed = false;
    CHECK_OK(cg_remove_auto_topup(m, "bob", &removed));
    CHECK(removed);
    CHECK_OK(cg_set_auto_topup(m, "bob", &rule, &again));
    CHECK(again.topup_id[0] == '\0');
    CHECK(count_events(m, "topup.skipped") == 1);
    cg_close(m);
}

static void test_rule_rules(void) {
    CHECK(CG_MAX_TOPUPS_PER_MONTH == 100 && CG_MAX_LISTED_TOPUPS == 1000);
    CHECK(CG_TOPUP_REQUESTED == 0 && CG_TOPUP_PAID == 1 && CG_TOPUP_FAILED == 2);
    cg_manager *m = open_temp();
    const cg_auto_topup ok = {.threshold_micros = CREDITS(10),
                              .amount_micros = CREDITS(20),
                              .max_per_month = 2,
                              .monthly_cap_micros = CREDITS(100)};
    /* Each a copy of `ok` with one field out of range. */
    cg_auto_topup bad[9];
    const char *needle[9] = {"exactly one of amount_micros and target_micros",
                             "exactly one of amount_micros and target_micros",
                             "threshold", "amount", "target", "max_per_month", "max_per_month", "monthly_cap",
                             "amount"};
    for (size_t i = 0; i < 9; i++) bad[i] = ok;
    bad[0].target_micros = CREDITS(50); /* both */
    bad[1].amount_micros = 0;           /* neither */
    bad[2].threshold_micros = -1;
    bad[3].amount_micros = -5;
    bad[4].amount_micros = 0; /* a target not above the threshold */
    bad[4].target_micros = CREDITS(10);
    bad[5].max_per_month = 0;
    bad[6].max_per_month = CG_MAX_TOPUPS_PER_MONTH + 1;
    bad[7].monthly_cap_micros = 0;
    bad[8].amount_micros = INT64_MAX; /* beyond the largest amount */
    cg_topup t;
    for (size_t i = 0; i < 9; i++) {
        memset(&t, 0xA5, sizeof t);
        CHECK_ERR(cg_set_auto_topup(m, "alice", &bad[i], &t), CG_INVALID_ARGUMENT, needle[i]);
        CHECK(t.topup_id[0] == '\0' && t.amount_micros == 0 && t.status == CG_TOPUP_REQUESTED);
    }
    const int64_t limits[] = {INT64_MIN, -1, CG_MAX_LISTED_TOPUPS + 1, 4294967296LL, INT64_MAX};
    char *json;
    for (size_t i = 0; i < sizeof limits / sizeof *limits; i++) {
        json = (char *)1;
        CHECK_ERR(cg_topups_json(m, "alice", limits[i], &json), CG_INVALID_ARGUMENT, "limit");
        CHECK(json == NULL);
    }
    CHECK_OK(cg_topups_json(m, "alice", CG_MAX_LISTED_TOPUPS, &json));
    CHECK(strcmp(json, "[]") == 0);
    cg_string_free(json);
    /* Nothing was written: no rule. */
    CHECK_OK(cg_account_json(m, "alice", &json));
    CHECK_CONTAINS(json, "\"auto_topup\":null");
    cg_string_free(json);
    cg_close(m);
}

/* NULL for every pointer of every new function, and invalid UTF-8 in each
 * string: CG_INVALID_ARGUMENT, out-pointers reset, nothing written. */
static void test_topup_bad_input(void) {
    cg_manager *m = open_temp();
    const cg_status inv = CG_INVALID_ARGUMENT;
    const cg_auto_topup rule = {.threshold_micros = CREDITS(10),
                                .amount_micros = CREDITS(20),
                                .max_per_month = 2,
                                .monthly_cap_micros = CREDITS(100)};
    const char *tu = "tu_00000000000000000000000000000000";
    cg_topup t;
    bool removed;
    char *s;
    for (int v = 0; v < 2; v++) {
        const char *x = v == 0 ? NULL : BAD_UTF8;
        memset(&t, 0xA5, sizeof t);
        CHECK_STATUS(cg_set_auto_topup(m, x, &rule, &t), inv);
        CHECK(t.topup_id[0] == '\0' && t.user_id[0] == '\0');
        removed = true;
        CHECK_STATUS(cg_remove_auto_topup(m, x, &removed), inv);
        CHECK(!removed);
        s = (char *)&t;
        CHECK_STATUS(cg_topups_json(m, x, 0, &s), inv);
        CHECK(s == NULL);
        CHECK_STATUS(cg_record_topup_failure(m, x, "r", &t), inv);
        CHECK_STATUS(cg_record_topup_failure(m, tu, x, &t), inv);
    }
    CHECK_ERR(cg_set_auto_topup(m, "alice", NULL, &t), inv, "rule is NULL");
    CHECK_ERR(cg_set_auto_topup(NULL, "alice", &rule, &t), inv, "manager is NULL");
    CHECK_ERR(cg_set_auto_topup(m, "alice", &rule, NULL), inv, "topup_out is NULL");
    CHECK_ERR(cg_remove_auto_topup(NULL, "alice", &removed), inv, "manager is NULL");
    CHECK_ERR(cg_remove_auto_topup(m, "alice", NULL), inv, "removed_out is NULL");
    CHECK_ERR(cg_topups_json(NULL, "alice", 0, &s), inv, "manager is NULL");
    CHECK_ERR(cg_topups_json(m, "alice", 0, NULL), inv, "json_out is NULL");
    CHECK_ERR(cg_record_topup_failure(NULL, tu, "r", &t), inv, "manager is NULL");
    CHECK_ERR(cg_record_topup_failure(m, tu, "r", NULL), inv, "topup_out is NULL");
    CHECK_ERR(cg_record_topup_failure(m, tu, "", &t), inv, "reason");
    /* Nothing was written. */
    CHECK_OK(cg_account_json(m, "alice", &s));
    CHECK_CONTAINS(s, "\"auto_topup\":null");
    cg_string_free(s);
    CHECK_OK(cg_events_json(m, 0, 0, &s));
    CHECK(strcmp(s, "[]") == 0);
    cg_string_free(s);
    cg_close(m);
}

int main(void) {
    harness_env();
    RUN(test_crossing_payment_and_failure);
    RUN(test_rule_below_threshold_and_caps);
    RUN(test_rule_rules);
    RUN(test_topup_bad_input);
    remove_temp_dbs();
    return harness_summary("test_topups");
}
