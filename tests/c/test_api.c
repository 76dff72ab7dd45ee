/*
 * Every function of include/creditgate.h: its success path and its error
 * paths (NULL pointers, invalid UTF-8, out-of-range values -> 
 * CG_INVALID_ARGUMENT with a message, and the domain errors of docs/reference.md).
 */
#include "harness.h"

static const char BAD_UTF8[] = "al\xff" "ice";
static char LONG_TEXT[300]; /* 256 bytes of 'x': one over the 255-byte limit */

/* Credits `user` with a $5 payment (5,000 credits) and creates a key. */
static char *paid_key(cg_manager *m, const char *user, const char *payment_id, cg_api_key *key) {
    cg_entry e;
    CHECK_OK(cg_record_payment(m, user, payment_id, 500, "USD", &e));
    char *secret = NULL;
    CHECK_OK(cg_create_api_key(m, user, NULL, &secret, key));
    return secret;
}

/* ----- statuses, version, strings --------------------------------------- */

static void test_status_table(void) {
    const struct {
        cg_status status;
        uint32_t value;
        uint16_t http;
        const char *name;
    } table[] = {
        {CG_OK, 0, 200, "ok"},
        {CG_INSUFFICIENT_CREDITS, 1, 402, "insufficient_credits"},
        {CG_INVALID_API_KEY, 2, 401, "invalid_api_key"},
        {CG_LIMIT_REACHED, 3, 403, "limit_reached"},
        {CG_NOT_FOUND, 4, 404, "not_found"},
        {CG_IDEMPOTENCY_CONFLICT, 5, 409, "idempotency_conflict"},
        {CG_INVALID_ARGUMENT, 6, 400, "invalid_argument"},
        {CG_STORAGE_ERROR, 7, 503, "storage"},
        {CG_INTERNAL, 8, 500, "internal"},
        {CG_PANIC, 9, 500, "panic"},
        {CG_RATE_LIMITED, 10, 429, "rate_limited"},
    };
    for (size_t i = 0; i < sizeof table / sizeof *table; i++) {
        CHECK(table[i].status == table[i].value);
        CHECK(cg_status_http(table[i].status) == table[i].http);
        CHECK(strcmp(cg_status_name(table[i].status), table[i].name) == 0);
    }
    CHECK(sizeof(cg_status) == 4);
    CHECK(cg_status_http(11) == 500);
    CHECK(cg_status_http(UINT32_MAX) == 500);
    CHECK(strcmp(cg_status_name(11), "unknown") == 0);
    CHECK(strcmp(cg_status_name(UINT32_MAX), "unknown") == 0);
}

static void test_version_and_strings(void) {
    const char *v = cg_version();
    CHECK(v != NULL && strlen(v) >= 5 && strchr(v, '.') != NULL);
    CHECK(v == cg_version()); /* static */
    cg_string_free(NULL);     /* a no-op */
    cg_close(NULL);           /* a no-op */
}

static void test_last_error(void) {
    cg_manager *m = open_temp();
    int64_t balance = 1;
    CHECK_OK(cg_balance(m, "alice", &balance));
    CHECK(strcmp(cg_last_error(), "") == 0);
    CHECK_ERR(cg_balance(m, NULL, &balance), CG_INVALID_ARGUMENT, "user_id is NULL");
    CHECK_CONTAINS(cg_last_error(), "user_id is NULL"); /* reading it changes nothing */
    CHECK(strcmp(cg_status_name(CG_OK), "ok") == 0);    /* neither do the pure functions */
    CHECK_CONTAINS(cg_last_error(), "user_id is NULL");
    CHECK_OK(cg_balance(m, "alice", &balance));
    CHECK(strcmp(cg_last_error(), "") == 0);
    cg_close(m);
}

/* ----- open, close, database URL, migrate ----------------------------------- */

static void test_open(void) {
    char url[128];
    temp_url(url, sizeof url);
    cg_manager *m = (cg_manager *)1;
    CHECK_OK(cg_open(url, &m));
    CHECK(m != NULL);
    char *shown = NULL;
    CHECK_OK(cg_database_url(m, &shown));
    CHECK_CONTAINS(shown, "sqlite:///");
    cg_string_free(shown);
    CHECK_OK(cg_migrate(m));
    CHECK_OK(cg_migrate(m)); /* twice is fine */
    cg_close(m);

    m = (cg_manager *)1;
    CHECK_ERR(cg_open(url, NULL), CG_INVALID_ARGUMENT, "manager_out is NULL");
    CHECK_ERR(cg_open(BAD_UTF8, &m), CG_INVALID_ARGUMENT, "database_url is not valid UTF-8");
    CHECK(m == NULL); /* reset on failure */
    CHECK_ERR(cg_open("mysql://nope", &m), CG_INVALID_ARGUMENT, "mysql://nope");
    CHECK_ERR(cg_open("sqlite:///", &m), CG_INVALID_ARGUMENT, "no file path");
    CHECK_ERR(cg_open("sqlite:////nonexistent-dir/x/y.db", &m), CG_STORAGE_ERROR, "nonexistent-dir");
    CHECK(m == NULL);
    CHECK_ERR(cg_database_url(NULL, &shown), CG_INVALID_ARGUMENT, "manager is NULL");
    CHECK_ERR(cg_migrate(NULL), CG_INVALID_ARGUMENT, "manager is NULL");
}

static void test_backup(void) {
    char url[128], dest[160], copy_url[192];
    temp_url(url, sizeof url);
    cg_manager *m = NULL;
    CHECK_OK(cg_open(url, &m));
    cg_entry e;
    CHECK_OK(cg_add_credits(m, "backup-user", CREDITS(42), NULL, NULL, &e));
    snprintf(dest, sizeof dest, "%s.copy", url + strlen("sqlite:///"));
    int64_t size = -1;
    CHECK_OK(cg_backup(m, dest, &size));
    CHECK(size > 0);
    CHECK_ERR(cg_backup(m, dest, &size), CG_INVALID_ARGUMENT, "never overwritten");
    CHECK(size == 0); /* reset on failure */
    CHECK_ERR(cg_backup(m, NULL, NULL), CG_INVALID_ARGUMENT, "dest_path is NULL");
    CHECK_ERR(cg_backup(NULL, dest, NULL), CG_INVALID_ARGUMENT, "manager is NULL");
    cg_close(m);

    snprintf(copy_url, sizeof copy_url, "sqlite:///%s", dest);
    m = NULL;
    CHECK_OK(cg_open(copy_url, &m));
    int64_t balance = 0;
    CHECK_OK(cg_balance(m, "backup-user", &balance));
    CHECK(balance == CREDITS(42));
    cg_close(m);
}

static void test_min_balance(void) {
    char url[128];
    temp_url(url, sizeof url);
    cg_manager *m = NULL;
    CHECK_OK(cg_open(url, &m));
    cg_entry e;
    CHECK_OK(cg_add_credits(m, "trusted", CREDITS(10), NULL, NULL, &e));
    CHECK_OK(cg_set_min_balance(m, "trusted", -CREDITS(5)));
    char *json = NULL;
    CHECK_OK(cg_account_json(m, "trusted", &json));
    CHECK_CONTAINS(json, "\"min_balance_micros\":-5000000");
    CHECK_CONTAINS(json, "\"available_micros\":15000000");
    cg_string_free(json);
    CHECK_OK(cg_deduct_credits(m, "trusted", CREDITS(15), NULL, &e));
    CHECK(e.balance_after_micros == -CREDITS(5));
    CHECK_ERR(cg_deduct_credits(m, "trusted", 1, NULL, &e), CG_INSUFFICIENT_CREDITS, "");
    CHECK_ERR(cg_set_min_balance(m, "trusted", 1), CG_INVALID_ARGUMENT, "min_balance");
    CHECK_ERR(cg_set_min_balance(m, NULL, 0), CG_INVALID_ARGUMENT, "user_id is NULL");
    CHECK_ERR(cg_set_min_balance(NULL, "trusted", 0), CG_INVALID_ARGUMENT, "manager is NULL");
    cg_close(m);
}

static void test_open_env(void) {
    char url[128];
    temp_url(url, sizeof url);
    setenv("DATABASE_URL", url, 1);
    cg_manager *m = NULL;
    CHECK_OK(cg_open_env(&m));
    cg_entry e;
    CHECK_OK(cg_add_credits(m, "env-user", CREDITS(7), NULL, NULL, &e));
    cg_close(m);

    /* cg_open_env again: the same database. cg_open(NULL) is an error, never
       a ledger opened (or created) from somewhere else. */
    m = NULL;
    CHECK_OK(cg_open_env(&m));
    int64_t balance = 0;
    CHECK_OK(cg_balance(m, "env-user", &balance));
    CHECK_EQ_I64(balance, CREDITS(7));
    cg_close(m);
    m = (cg_manager *)1;
    CHECK_ERR(cg_open(NULL, &m), CG_INVALID_ARGUMENT, "database_url is NULL");
    CHECK(m == NULL);

    CHECK_ERR(cg_open_env(NULL), CG_INVALID_ARGUMENT, "manager_out is NULL");
    setenv("CREDITS_PER_USD", "abc", 1);
    m = (cg_manager *)1;
    CHECK_ERR(cg_open_env(&m), CG_INVALID_ARGUMENT, "CREDITS_PER_USD");
    CHECK(m == NULL);
    CHECK_ERR(cg_open(url, &m), CG_INVALID_ARGUMENT, "CREDITS_PER_USD");
    unsetenv("CREDITS_PER_USD");
    unsetenv("DATABASE_URL");
}

/* ----- balances and entries ---------------------------------------------------- */

static void test_balance_and_account(void) {
    cg_manager *m = open_temp();
    int64_t balance = 1;
    CHECK_OK(cg_balance(m, "nobody", &balance));
    CHECK_EQ_I64(balance, 0);

    char *json = NULL;
    CHECK_OK(cg_account_json(m, "nobody", &json));
    CHECK_CONTAINS(json, "\"balance_micros\":0");
    CHECK_CONTAINS(json, "\"created_at\":null");
    cg_string_free(json);

    cg_entry e;
    CHECK_OK(cg_add_credits(m, "bob", 1500000, NULL, NULL, &e));
    CHECK_OK(cg_balance(m, "bob", &balance));
    CHECK_EQ_I64(balance, 1500000);
    CHECK_OK(cg_account_json(m, "bob", &json));
    const char *fields[] = {"\"user_id\":\"bob\"", "\"balance_micros\":1500000", "\"held_micros\":0",
                            "\"available_micros\":1500000", "\"lifetime_purchased_micros\":0",
                            "\"lifetime_used_micros\":0", "\"active_keys\":0", "\"first_key_issued\":false",
                            "\"created_at\":\"20"};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) CHECK_CONTAINS(json, fields[i]);
    CHECK_CONTAINS(json, "Z\"");
    cg_string_free(json);

    CHECK_ERR(cg_balance(NULL, "bob", &balance), CG_INVALID_ARGUMENT, "manager is NULL");
    CHECK_ERR(cg_balance(m, NULL, &balance), CG_INVALID_ARGUMENT, "user_id is NULL");
    CHECK_ERR(cg_balance(m, "bob", NULL), CG_INVALID_ARGUMENT, "balance_micros_out is NULL");
    balance = 42;
    CHECK_ERR(cg_balance(m, BAD_UTF8, &balance), CG_INVALID_ARGUMENT, "user_id is not valid UTF-8");
    CHECK_EQ_I64(balance, 0); /* reset on failure */
    CHECK_ERR(cg_balance(m, "", &balance), CG_INVALID_ARGUMENT, "user_id must be 1..=255 bytes");
    CHECK_ERR(cg_balance(m, LONG_TEXT, &balance), CG_INVALID_ARGUMENT, "256 bytes");
    json = (char *)1;
    CHECK_ERR(cg_account_json(m, BAD_UTF8, &json), CG_INVALID_ARGUMENT, "not valid UTF-8");
    CHECK(json == NULL);
    CHECK_ERR(cg_account_json(m, "bob", NULL), CG_INVALID_ARGUMENT, "json_out is NULL");
    CHECK_ERR(cg_account_json(NULL, "bob", &json), CG_INVALID_ARGUMENT, "manager is NULL");
    cg_close(m);
}

static void test_add_credits(void) {
    cg_manager *m = open_temp();
    cg_entry e;
    CHECK_OK(cg_add_credits(m, "carol", CREDITS(10), NULL, &(cg_entry_options){.idempotency_key = "grant-1",
             .reference = "welcome", .metadata_json = "{\"campaign\":\"spring\"}"}, &e));
    CHECK_EQ_I64(e.seq, 1);
    CHECK_EQ_I64(e.amount_micros, CREDITS(10));
    CHECK_EQ_I64(e.balance_after_micros, CREDITS(10));
    CHECK(strlen(e.id) == 36 && e.id[8] == '-' && !e.replayed);
    CHECK(strcmp(e.user_id, "carol") == 0);
    char first_id[CG_ID_SIZE];
    memcpy(first_id, e.id, sizeof first_id);

    /* Idempotent replay: same key, same amount; other reference is fine. */
    CHECK_OK(cg_add_credits(m, "carol", CREDITS(10), "grant", &(cg_entry_options){.idempotency_key = "grant-1",
             .reference = "other"}, &e));
    CHECK(e.replayed && strcmp(e.id, first_id) == 0);
    CHECK_EQ_I64(e.balance_after_micros, CREDITS(10));
    CHECK_ERR(cg_add_credits(m, "carol", CREDITS(11), NULL, &(cg_entry_options){.idempotency_key = "grant-1"}, &e),
              CG_IDEMPOTENCY_CONFLICT,
              "grant-1");
    CHECK(e.seq == 0 && e.id[0] == '\0'); /* zeroed on failure */

    /* Options: a zeroed struct is the same as NULL (none); set only what you need. */
    cg_entry_options options = {0};
    CHECK_OK(cg_add_credits(m, "carol", 1, NULL, &options, &e));
    CHECK(!e.replayed && e.seq == 2);
    options.idempotency_key = "grant-2";
    options.metadata_json = "{\"n\":2}";
    CHECK_OK(cg_add_credits(m, "carol", 1, NULL, &options, &e));
    CHECK_OK(cg_add_credits(m, "carol", 1, NULL, &options, &e));
    CHECK(e.replayed && e.seq == 3);
    CHECK_OK(cg_add_credits(m, "carol", -2, "adjustment", NULL, &e));

    CHECK_OK(cg_add_credits(m, "carol", CREDITS(2), "purchase", NULL, &e));
    CHECK_OK(cg_add_credits(m, "carol", 1, "refund", NULL, &e));
    CHECK_OK(cg_add_credits(m, "carol", -CREDITS(3), "adjustment", NULL, &e));
    CHECK_EQ_I64(e.balance_after_micros, CREDITS(9) + 1);
    /* A negative adjustment is strict. */
    CHECK_ERR(cg_add_credits(m, "carol", -CREDITS(100), "adjustment", NULL, &e), CG_INSUFFICIENT_CREDITS,
              "insufficient credits");

    CHECK_ERR(cg_add_credits(m, "carol", 0, NULL, NULL, &e), CG_INVALID_ARGUMENT, "amount");
    CHECK_ERR(cg_add_credits(m, "carol", -1, NULL, NULL, &e), CG_INVALID_ARGUMENT, "amount");
    CHECK_ERR(cg_add_credits(m, "carol", INT64_MAX, NULL, NULL, &e), CG_INVALID_ARGUMENT, "amount");
    CHECK_ERR(cg_add_credits(m, "carol", INT64_MIN, "adjustment", NULL, &e), CG_INVALID_ARGUMENT,
              "adjustment");
    CHECK_ERR(cg_add_credits(m, "carol", 1000000000000000001, NULL, NULL, &e), CG_INVALID_ARGUMENT,
              "1000000000000");
    CHECK_ERR(cg_add_credits(m, "carol", 1, "usage", NULL, &e), CG_INVALID_ARGUMENT, "usage");
    CHECK_ERR(cg_add_credits(m, "carol", 1, "bonus", NULL, &e), CG_INVALID_ARGUMENT, "bonus");
    CHECK_ERR(cg_add_credits(m, "carol", 1, BAD_UTF8, NULL, &e), CG_INVALID_ARGUMENT,
              "kind is not valid UTF-8");
    CHECK_ERR(cg_add_credits(m, "carol", 1, NULL, &(cg_entry_options){.idempotency_key = "payment:x"}, &e),
              CG_INVALID_ARGUMENT, "reserved");
    CHECK_ERR(cg_add_credits(m, "carol", 1, NULL, &(cg_entry_options){.idempotency_key = BAD_UTF8}, &e),
              CG_INVALID_ARGUMENT,
              "idempotency_key is not valid UTF-8");
    CHECK_ERR(cg_add_credits(m, "carol", 1, NULL, &(cg_entry_options){.idempotency_key = LONG_TEXT}, &e),
              CG_INVALID_ARGUMENT,
              "idempotency_key");
    CHECK_ERR(cg_add_credits(m, "carol", 1, NULL, &(cg_entry_options){.reference = BAD_UTF8}, &e), CG_INVALID_ARGUMENT,
              "reference is not valid UTF-8");
    CHECK_ERR(cg_add_credits(m, "carol", 1, NULL, &(cg_entry_options){.metadata_json = "{nope"}, &e),
              CG_INVALID_ARGUMENT, "not valid JSON");
    CHECK_ERR(cg_add_credits(m, "carol", 1, NULL, &(cg_entry_options){.metadata_json = "[1,2]"}, &e),
              CG_INVALID_ARGUMENT, "JSON object");
    CHECK_ERR(cg_add_credits(m, "carol", 1, NULL, &(cg_entry_options){.metadata_json = BAD_UTF8}, &e),
              CG_INVALID_ARGUMENT,
              "metadata_json is not valid UTF-8");
    char big[6000];
    snprintf(big, sizeof big, "{\"k\":\"%5000d\"}", 1);
    CHECK_ERR(cg_add_credits(m, "carol", 1, NULL, &(cg_entry_options){.metadata_json = big}, &e), CG_INVALID_ARGUMENT,
              "4096");
    CHECK_ERR(cg_add_credits(m, NULL, 1, NULL, NULL, &e), CG_INVALID_ARGUMENT, "user_id is NULL");
    CHECK_ERR(cg_add_credits(m, "carol", 1, NULL, NULL, NULL), CG_INVALID_ARGUMENT,
              "entry_out is NULL");
    CHECK_ERR(cg_add_credits(NULL, "carol", 1, NULL, NULL, &e), CG_INVALID_ARGUMENT,
              "manager is NULL");

    /* Failed calls changed nothing. */
    int64_t balance = 0;
    CHECK_OK(cg_balance(m, "carol", &balance));
    CHECK_EQ_I64(balance, CREDITS(9) + 1);
    cg_close(m);
}

static void test_payments(void) {
    cg_manager *m = open_temp();
    cg_entry e;
    CHECK_OK(cg_record_payment(m, "dave", "pi_1", 500, NULL, &e)); /* NULL currency = USD */
    CHECK_EQ_I64(e.amount_micros, CREDITS(5000));
    CHECK(!e.replayed);
    CHECK_OK(cg_record_payment(m, "dave", "pi_1", 500, "usd", &e)); /* the webhook again */
    CHECK(e.replayed);
    CHECK_EQ_I64(e.balance_after_micros, CREDITS(5000));
    CHECK_ERR(cg_record_payment(m, "dave", "pi_1", 600, "USD", &e), CG_IDEMPOTENCY_CONFLICT, "payment:pi_1");
    CHECK_ERR(cg_record_payment(m, "erin", "pi_1", 500, "USD", &e), CG_IDEMPOTENCY_CONFLICT, "payment:pi_1");
    CHECK_ERR(cg_record_payment(m, "dave", "pi_2", 500, "EUR", &e), CG_INVALID_ARGUMENT, "EUR");
    CHECK_ERR(cg_record_payment(m, "dave", "pi_2", 0, "USD", &e), CG_INVALID_ARGUMENT, "amount_minor");
    CHECK_ERR(cg_record_payment(m, "dave", "pi_2", -5, "USD", &e), CG_INVALID_ARGUMENT, "-5");
    CHECK_ERR(cg_record_payment(m, "dave", "pi_2", INT64_MAX, "USD", &e), CG_INVALID_ARGUMENT, "largest amount");
    CHECK_ERR(cg_record_payment(m, "dave", NULL, 500, "USD", &e), CG_INVALID_ARGUMENT, "payment_id is NULL");
    CHECK_ERR(cg_record_payment(m, "dave", BAD_UTF8, 500, "USD", &e), CG_INVALID_ARGUMENT,
              "payment_id is not valid UTF-8");
    CHECK_ERR(cg_record_payment(m, "dave", "pi_2", 500, BAD_UTF8, &e), CG_INVALID_ARGUMENT,
              "currency is not valid UTF-8");
    CHECK_ERR(cg_record_payment(m, "dave", "pi_2", 500, "USD", NULL), CG_INVALID_ARGUMENT, "entry_out is NULL");

    /* Reversals: a part, then the rest (amount_minor 0), then nothing left. */
    CHECK_OK(cg_reverse_payment(m, "pi_1", 100, "partial refund", "re_1", &e));
    CHECK_EQ_I64(e.amount_micros, -CREDITS(1000));
    CHECK(strcmp(e.user_id, "dave") == 0);
    CHECK_OK(cg_reverse_payment(m, "pi_1", 100, "partial refund", "re_1", &e)); /* replay */
    CHECK(e.replayed);
    CHECK_ERR(cg_reverse_payment(m, "pi_1", 200, NULL, "re_1", &e), CG_IDEMPOTENCY_CONFLICT, "reversal:re_1");
    CHECK_ERR(cg_reverse_payment(m, "pi_1", 401, NULL, "re_2", &e), CG_INVALID_ARGUMENT, "only 400 remain");
    CHECK_OK(cg_reverse_payment(m, "pi_1", 0, "chargeback", NULL, &e));
    CHECK_EQ_I64(e.amount_micros, -CREDITS(4000));
    CHECK_EQ_I64(e.balance_after_micros, 0);
    CHECK_ERR(cg_reverse_payment(m, "pi_1", 0, NULL, "re_3", &e), CG_INVALID_ARGUMENT, "fully reversed");
    CHECK_ERR(cg_reverse_payment(m, "pi_unknown", 0, NULL, NULL, &e), CG_NOT_FOUND, "pi_unknown");
    CHECK_ERR(cg_reverse_payment(m, "pi_1", -1, NULL, NULL, &e), CG_INVALID_ARGUMENT, "amount_minor");
    CHECK_ERR(cg_reverse_payment(m, NULL, 0, NULL, NULL, &e), CG_INVALID_ARGUMENT, "payment_id is NULL");
    CHECK_ERR(cg_reverse_payment(m, "pi_1", 0, BAD_UTF8, NULL, &e), CG_INVALID_ARGUMENT,
              "reason is not valid UTF-8");
    CHECK_ERR(cg_reverse_payment(m, "pi_1", 0, NULL, BAD_UTF8, &e), CG_INVALID_ARGUMENT,
              "reversal_id is not valid UTF-8");
    CHECK_ERR(cg_reverse_payment(m, "pi_1", 0, NULL, NULL, NULL), CG_INVALID_ARGUMENT, "entry_out is NULL");
    cg_close(m);
}

/* Currencies come from CREDITGATE_CURRENCY_RATES (C has no config struct);
   a won dispute reinstates its reversal once. */
static void test_currencies_and_reinstatement(void) {
    char url[128];
    temp_url(url, sizeof url);
    setenv("CREDITGATE_CURRENCY_RATES", "EUR=1100:2,JPY=7.5:0", 1);
    cg_manager *m = NULL;
    CHECK_OK(cg_open(url, &m));
    unsetenv("CREDITGATE_CURRENCY_RATES");
    cg_entry e;
    CHECK_OK(cg_record_payment(m, "erin", "pi_eur", 1999, "eur", &e));
    CHECK_EQ_I64(e.amount_micros, CREDITS(21989));
    CHECK_OK(cg_record_payment(m, "erin", "pi_jpy", 3, "JPY", &e));
    CHECK_EQ_I64(e.amount_micros, 22500000); /* 22.5 credits */
    CHECK_ERR(cg_record_payment(m, "erin", "pi_gbp", 100, "GBP", &e), CG_INVALID_ARGUMENT, "GBP");

    CHECK_OK(cg_reverse_payment(m, "pi_eur", 999, "dispute", "dp_1", &e));
    CHECK_EQ_I64(e.amount_micros, -CREDITS(10989));
    CHECK_OK(cg_reinstate_reversal(m, "dp_1", "won", &e));
    CHECK_EQ_I64(e.amount_micros, CREDITS(10989));
    CHECK(!e.replayed);
    CHECK_OK(cg_reinstate_reversal(m, "dp_1", NULL, &e));
    CHECK(e.replayed);
    int64_t balance = 0;
    CHECK_OK(cg_balance(m, "erin", &balance));
    CHECK_EQ_I64(balance, CREDITS(21989) + 22500000);
    CHECK_ERR(cg_reinstate_reversal(m, "dp_none", NULL, &e), CG_NOT_FOUND, "dp_none");
    CHECK_ERR(cg_reinstate_reversal(m, NULL, NULL, &e), CG_INVALID_ARGUMENT, "reversal_id is NULL");
    CHECK_ERR(cg_reinstate_reversal(m, BAD_UTF8, NULL, &e), CG_INVALID_ARGUMENT, "reversal_id is not valid UTF-8");
    CHECK_ERR(cg_reinstate_reversal(m, "dp_1", NULL, NULL), CG_INVALID_ARGUMENT, "entry_out is NULL");
    CHECK_ERR(cg_reinstate_reversal(NULL, "dp_1", NULL, &e), CG_INVALID_ARGUMENT, "manager is NULL");

    char *json = NULL;
    CHECK_OK(cg_report_json(m, &json));
    CHECK_CONTAINS(json, "\"revenue_minor_by_currency\":{\"EUR\":1999,\"JPY\":3}");
    CHECK_CONTAINS(json, "\"revenue_usd_minor\":0");
    cg_string_free(json);
    cg_close(m);
}

static void test_grants(void) {
    cg_manager *m = open_temp();
    cg_entry e;
    /* Far in the future: 2100-01-01T00:00:00Z. */
    const int64_t later = INT64_C(4102444800000000);
    CHECK_OK(cg_record_payment_grant(m, "gina", "pi_g", 100, NULL, NULL, &e)); /* paid */
    CHECK_OK(cg_add_credits_grant(m, "gina", CREDITS(20), NULL, NULL, &(cg_grant_options){.priority = 5,
             .expires_at_micros = later}, &e));
    CHECK_OK(cg_add_credits_grant(m, "gina", CREDITS(30), "refund", NULL,
             &(cg_grant_options){.category = "promotional", .priority = -2}, &e));
    char *json = NULL;
    CHECK_OK(cg_account_json(m, "gina", &json));
    /* Draw-down order: promotional (priority -2, then 5), then paid. */
    const char *a = strstr(json, "\"remaining_micros\":30000000,");
    const char *b = strstr(json, "\"remaining_micros\":20000000,");
    const char *c = strstr(json, "\"remaining_micros\":1000000000,");
    CHECK(a != NULL && b != NULL && c != NULL && a < b && b < c);
    CHECK_CONTAINS(json, "\"expires_at\":\"2100-01-01T00:00:00.000000Z\"");
    CHECK_CONTAINS(json, "\"payment_id\":\"pi_g\"");
    CHECK_CONTAINS(json, "\"category\":\"paid\"");
    cg_string_free(json);

    CHECK_OK(cg_deduct_credits(m, "gina", CREDITS(40), NULL, &e));
    CHECK_OK(cg_account_json(m, "gina", &json));
    CHECK(strstr(json, "\"remaining_micros\":30000000,") == NULL);
    CHECK_CONTAINS(json, "\"remaining_micros\":10000000,");
    cg_string_free(json);

    /* The payment's own grant gives first; the metadata says what was spent. */
    CHECK_OK(cg_reverse_payment(m, "pi_g", 0, NULL, NULL, &e));
    CHECK_EQ_I64(e.amount_micros, -CREDITS(1000));
    CHECK_OK(cg_transactions_json(m, "gina", 1, NULL, &json));
    CHECK_CONTAINS(json, "\"from_grant_micros\":1000000000");
    CHECK_CONTAINS(json, "\"already_spent_micros\":0");
    cg_string_free(json);

    CHECK_OK(cg_expire_grants(m, 100, &json));
    CHECK_CONTAINS(json, "\"entries\":0");
    CHECK_CONTAINS(json, "\"credits_micros\":0");
    cg_string_free(json);

    /* A zeroed grant is the default grant (as NULL): kind "grant" is promotional, priority 0, no expiry. */
    cg_grant_options grant = {0};
    cg_entry_options options = {.idempotency_key = "gina-bonus"};
    CHECK_OK(cg_add_credits_grant(m, "gina", CREDITS(3), NULL, &options, &grant, &e));
    CHECK_OK(cg_add_credits_grant(m, "gina", CREDITS(3), NULL, &options, NULL, &e));
    CHECK(e.replayed);
    CHECK_OK(cg_transactions_json(m, "gina", 1, NULL, &json));
    CHECK_CONTAINS(json, "\"idempotency_key\":\"gina-bonus\"");
    cg_string_free(json);
    CHECK_OK(cg_account_json(m, "gina", &json));
    /* Keys are sorted: the grant of 3 credits, unscoped (api_key_id), promotional. */
    CHECK_CONTAINS(json, "\"amount_micros\":3000000,\"api_key_id\":null,\"category\":\"promotional\"");
    cg_string_free(json);
    CHECK_ERR(cg_add_credits_grant(m, "gina", CREDITS(1), NULL, &(cg_entry_options){.reference = BAD_UTF8}, NULL, &e),
              CG_INVALID_ARGUMENT, "reference is not valid UTF-8");

    CHECK_ERR(cg_add_credits_grant(m, "gina", CREDITS(1), NULL, NULL, &(cg_grant_options){.category = "free"}, &e),
              CG_INVALID_ARGUMENT, "free");
    CHECK_ERR(cg_add_credits_grant(m, "gina", CREDITS(1), NULL, NULL, &(cg_grant_options){.priority = 1001}, &e),
              CG_INVALID_ARGUMENT, "priority");
    CHECK_ERR(cg_add_credits_grant(m, "gina", CREDITS(1), NULL, NULL, &(cg_grant_options){.expires_at_micros = 1}, &e),
              CG_INVALID_ARGUMENT, "expires_at");
    CHECK_ERR(cg_add_credits_grant(m, "gina", CREDITS(1), NULL, NULL, &(cg_grant_options){.category = BAD_UTF8}, &e),
              CG_INVALID_ARGUMENT, "category is not valid UTF-8");
    CHECK_ERR(cg_record_payment_grant(m, "gina", "pi_h", 100, NULL, &(cg_grant_options){.category = "paid",
              .priority = -1001}, &e), CG_INVALID_ARGUMENT,
              "priority");
    CHECK_OK(cg_expire_grants(m, 0, &json)); /* 0: the default, 1000 */
    CHECK_CONTAINS(json, "\"accounts\":0");
    cg_string_free(json);
    CHECK_ERR(cg_expire_grants(m, 10001, &json), CG_INVALID_ARGUMENT, "limit");
    CHECK(json == NULL);
    CHECK_ERR(cg_expire_grants(m, 10, NULL), CG_INVALID_ARGUMENT, "json_out is NULL");
    CHECK_ERR(cg_expire_grants(NULL, 10, &json), CG_INVALID_ARGUMENT, "manager is NULL");
    CHECK_OK(cg_audit_json(m, &json));
    CHECK_CONTAINS(json, "\"ok\":true");
    cg_string_free(json);
    cg_close(m);
}

static void test_deduct(void) {
    cg_manager *m = open_temp();
    cg_entry e;
    CHECK_OK(cg_add_credits(m, "frank", CREDITS(3), NULL, NULL, &e));
    CHECK_OK(cg_deduct_credits(m, "frank", CREDITS(2), &(cg_entry_options){.idempotency_key = "d-1",
             .reference = "job 7", .metadata_json = "{\"job\":7}"}, &e));
    CHECK_EQ_I64(e.amount_micros, -CREDITS(2));
    CHECK_EQ_I64(e.balance_after_micros, CREDITS(1));
    CHECK_OK(cg_deduct_credits(m, "frank", CREDITS(2), &(cg_entry_options){.idempotency_key = "d-1"}, &e));
    CHECK(e.replayed);
    CHECK_ERR(cg_deduct_credits(m, "frank", CREDITS(2), NULL, &e), CG_INSUFFICIENT_CREDITS,
              "2 required, 1 available");
    CHECK(cg_status_http(CG_INSUFFICIENT_CREDITS) == 402);
    CHECK_ERR(cg_deduct_credits(m, "frank", 0, NULL, &e), CG_INVALID_ARGUMENT, "amount");
    CHECK_ERR(cg_deduct_credits(m, "frank", -1, NULL, &e), CG_INVALID_ARGUMENT, "amount");
    CHECK_ERR(cg_deduct_credits(m, "frank", 1, &(cg_entry_options){.idempotency_key = "usage:x"}, &e),
              CG_INVALID_ARGUMENT, "reserved");
    CHECK_ERR(cg_deduct_credits(m, BAD_UTF8, 1, NULL, &e), CG_INVALID_ARGUMENT, "not valid UTF-8");
    CHECK_ERR(cg_deduct_credits(m, "frank", 1, &(cg_entry_options){.metadata_json = "7"}, &e), CG_INVALID_ARGUMENT,
              "JSON object");
    CHECK_ERR(cg_deduct_credits(m, "frank", 1, NULL, NULL), CG_INVALID_ARGUMENT, "entry_out is NULL");
    int64_t balance = 0;
    CHECK_OK(cg_balance(m, "frank", &balance));
    CHECK_EQ_I64(balance, CREDITS(1));
    cg_close(m);
}

static void test_events(void) {
    cg_manager *m = open_temp();
    cg_entry e;
    char *json = NULL;
    CHECK_OK(cg_events_json(m, 0, 0, &json));
    CHECK(strcmp(json, "[]") == 0);
    cg_string_free(json);
    CHECK_OK(cg_record_payment(m, "hana", "pi_h", 250, "USD", &e));
    CHECK_OK(cg_record_payment(m, "hana", "pi_h2", 100, "USD", &e)); /* not the first: no event */
    CHECK_OK(cg_events_json(m, 0, 0, &json));
    CHECK(count_of(json, "\"id\":") == 1);
    const char *fields[] = {"\"kind\":\"purchase.first\"", "\"user_id\":\"hana\"", "\"amount\":\"2500\"",
                            "\"api_key_id\":null", "\"created_at\":\"20"};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) CHECK_CONTAINS(json, fields[i]);
    long long first_id = 0;
    const char *id_field = strstr(json, "\"id\":");
    CHECK(id_field != NULL && sscanf(id_field + 5, "%lld", &first_id) == 1 && first_id > 0);
    cg_string_free(json);
    CHECK_OK(cg_events_json(m, first_id, 10, &json)); /* resume after it: nothing new */
    CHECK(strcmp(json, "[]") == 0);
    cg_string_free(json);

    json = (char *)1;
    CHECK_ERR(cg_events_json(m, 0, 1001, &json), CG_INVALID_ARGUMENT, "1001");
    CHECK(json == NULL);
    CHECK_ERR(cg_events_json(m, 0, -1, &json), CG_INVALID_ARGUMENT, "-1");
    CHECK_ERR(cg_events_json(m, -5, 10, &json), CG_INVALID_ARGUMENT, "after");
    CHECK_ERR(cg_events_json(m, first_id + 1000, 10, &json), CG_INVALID_ARGUMENT, "not the id of an event");
    CHECK_ERR(cg_events_json(m, 0, 10, NULL), CG_INVALID_ARGUMENT, "json_out is NULL");
    CHECK_ERR(cg_events_json(NULL, 0, 10, &json), CG_INVALID_ARGUMENT, "manager");
    cg_close(m);
}

static void test_rate_limits(void) {
    cg_manager *m = open_temp();
    cg_entry e;
    cg_api_key key;
    char *secret = NULL;
    cg_verification v;
    CHECK_OK(cg_record_payment(m, "rita", "pi_r", 500, "USD", &e));
    CHECK_OK(cg_create_api_key(m, "rita", NULL, &secret, &key));
    CHECK_OK(cg_set_rate_limit(m, key.key_id, 2, 0));
    /* Two requests in a minute; a third is 429 unless the minute just turned. */
    int ok = 0, limited = 0;
    for (int i = 0; i < 3; i++) {
        cg_status s = cg_verify_api_key_credits(m, secret, 0, &v);
        if (s == CG_OK) {
            ok++;
            CHECK(cg_last_error_retry_after() == 0);
        } else {
            CHECK(s == CG_RATE_LIMITED);
            CHECK(cg_status_http(s) == 429);
            CHECK_CONTAINS(cg_last_error(), "requests_per_minute");
            uint32_t wait = cg_last_error_retry_after();
            CHECK(wait >= 1 && wait <= 60);
            limited++;
        }
    }
    CHECK(ok + limited == 3 && ok >= 2);
    CHECK_OK(cg_set_rate_limit(m, key.key_id, 0, 0)); /* lifted */
    CHECK_OK(cg_verify_api_key_credits(m, secret, 0, &v));
    CHECK(cg_last_error_retry_after() == 0);
    CHECK_ERR(cg_set_rate_limit(m, "01890000-0000-7000-8000-000000000000", 5, 0), CG_NOT_FOUND, "no API key");
    CHECK_ERR(cg_set_rate_limit(m, "nope", 5, 0), CG_INVALID_ARGUMENT, "not a UUID");
    CHECK_ERR(cg_set_rate_limit(m, NULL, 5, 0), CG_INVALID_ARGUMENT, "key_id is NULL");
    CHECK_ERR(cg_set_rate_limit(m, key.key_id, 0, UINT64_MAX), CG_INVALID_ARGUMENT, "tokens_per_minute");
    cg_string_free(secret);
    cg_close(m);
}

static void test_transactions(void) {
    cg_manager *m = open_temp();
    cg_entry e, first;
    CHECK_OK(cg_record_payment(m, "gina", "pi_g", 250, "USD", &first));
    for (int i = 0; i < 4; i++) CHECK_OK(cg_deduct_credits(m, "gina", CREDITS(1), NULL, &e));

    char *json = NULL;
    CHECK_OK(cg_transactions_json(m, "gina", 0, NULL, &json)); /* 0 = default limit 50 */
    CHECK(json != NULL && json[0] == '[');
    CHECK(count_of(json, "\"seq\":") == 5);
    const char *fields[] = {"\"kind\":\"purchase\"", "\"amount_micros\":2500000000", "\"amount_minor\":250",
                            "\"currency\":\"USD\"", "\"kind\":\"deduct\"", "\"amount_micros\":-1000000",
                            "\"balance_after_micros\":2496000000", "\"reference\":\"pi_g\"",
                            "\"idempotency_key\":\"payment:pi_g\"", "\"metadata\":null", "\"replayed\":false",
                            "\"api_key_id\":null", "\"input_tokens\":null"};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) CHECK_CONTAINS(json, fields[i]);
    CHECK(strstr(json, "\"seq\":5") < strstr(json, "\"seq\":1")); /* newest first */
    cg_string_free(json);

    CHECK_OK(cg_transactions_json(m, "gina", 2, NULL, &json));
    CHECK(count_of(json, "\"seq\":") == 2);
    cg_string_free(json);
    CHECK_OK(cg_transactions_json(m, "gina", 1000, e.id, &json)); /* before the last entry */
    CHECK(count_of(json, "\"seq\":") == 4);
    CHECK(strstr(json, e.id) == NULL);
    cg_string_free(json);
    CHECK_OK(cg_transactions_json(m, "gina", 10, first.id, &json));
    CHECK(strcmp(json, "[]") == 0);
    cg_string_free(json);
    CHECK_OK(cg_transactions_json(m, "stranger", 10, NULL, &json));
    CHECK(strcmp(json, "[]") == 0);
    cg_string_free(json);

    json = (char *)1;
    CHECK_ERR(cg_transactions_json(m, "gina", 1001, NULL, &json), CG_INVALID_ARGUMENT, "1001");
    CHECK(json == NULL);
    CHECK_ERR(cg_transactions_json(m, "gina", -1, NULL, &json), CG_INVALID_ARGUMENT, "-1");
    CHECK_ERR(cg_transactions_json(m, "gina", INT64_MAX, NULL, &json), CG_INVALID_ARGUMENT, "limit");
    CHECK_ERR(cg_transactions_json(m, "stranger", 10, first.id, &json), CG_NOT_FOUND, first.id);
    CHECK_ERR(cg_transactions_json(m, "gina", 10, "01890000-0000-7000-8000-000000000000", &json), CG_NOT_FOUND,
              "no entry");
    CHECK_ERR(cg_transactions_json(m, "gina", 10, "not-a-uuid", &json), CG_INVALID_ARGUMENT, "not a UUID");
    CHECK_ERR(cg_transactions_json(m, "gina", 10, BAD_UTF8, &json), CG_INVALID_ARGUMENT,
              "before is not valid UTF-8");
    CHECK_ERR(cg_transactions_json(m, NULL, 10, NULL, &json), CG_INVALID_ARGUMENT, "user_id is NULL");
    CHECK_ERR(cg_transactions_json(m, "gina", 10, NULL, NULL), CG_INVALID_ARGUMENT, "json_out is NULL");
    cg_close(m);
}

/* The header's limits are the ones the library enforces: the largest value
 * passes, one more is CG_INVALID_ARGUMENT. */
static void test_limit_constants(void) {
    cg_manager *m = open_temp();
    char *json = NULL;
    CHECK_OK(cg_transactions_json(m, "lim", CG_MAX_PAGE_LIMIT, NULL, &json));
    cg_string_free(json);
    CHECK_ERR(cg_transactions_json(m, "lim", CG_MAX_PAGE_LIMIT + 1, NULL, &json), CG_INVALID_ARGUMENT, "limit");
    CHECK_OK(cg_events_json(m, 0, CG_MAX_EVENTS_PER_PAGE, &json));
    cg_string_free(json);
    CHECK_ERR(cg_events_json(m, 0, CG_MAX_EVENTS_PER_PAGE + 1, &json), CG_INVALID_ARGUMENT, "limit");
    CHECK_OK(cg_expire_grants(m, CG_MAX_EXPIRY_SWEEP, &json));
    cg_string_free(json);
    CHECK_ERR(cg_expire_grants(m, CG_MAX_EXPIRY_SWEEP + 1, &json), CG_INVALID_ARGUMENT, "limit");
    CHECK(CG_USER_ID_SIZE == CG_MAX_TEXT_BYTES + 1);
    CHECK(CG_DEFAULT_PAGE_LIMIT <= CG_MAX_PAGE_LIMIT && CG_DEFAULT_TTL_SECONDS <= CG_MAX_TTL_SECONDS);
    cg_close(m);
}

/* ----- API keys -------------------------------------------------------------------- */

static void test_key_creation_gate(void) {
    cg_manager *m = open_temp();
    cg_key_eligibility el;
    CHECK_OK(cg_can_generate_api_key(m, "hank", &el));
    CHECK(!el.allowed && el.is_first_key);
    CHECK_EQ_I64(el.required_micros, CREDITS(5000));
    CHECK_EQ_I64(el.available_micros, 0);

    char *secret = (char *)1;
    cg_api_key key;
    CHECK_ERR(cg_create_api_key(m, "hank", "first", &secret, &key), CG_INSUFFICIENT_CREDITS, "5000 required");
    CHECK(secret == NULL && key.key_id[0] == '\0');

    cg_entry e;
    CHECK_OK(cg_record_payment(m, "hank", "pi_h", 500, "USD", &e));
    CHECK_OK(cg_can_generate_api_key(m, "hank", &el));
    CHECK(el.allowed && el.is_first_key);
    CHECK_OK(cg_create_api_key(m, "hank", "first", &secret, &key));
    CHECK(secret != NULL && strncmp(secret, "sk_", 3) == 0 && strlen(secret) == 52);
    CHECK(strlen(key.key_id) == 36 && strlen(key.prefix) == 8 && strncmp(secret, key.prefix, 8) == 0);
    CHECK(!key.legacy);

    /* Later keys need 1 credit only. */
    CHECK_OK(cg_can_generate_api_key(m, "hank", &el));
    CHECK(el.allowed && !el.is_first_key);
    CHECK_EQ_I64(el.required_micros, CREDITS(1));

    char *json = NULL;
    CHECK_OK(cg_list_api_keys_json(m, "hank", &json));
    CHECK_CONTAINS(json, key.key_id);
    CHECK_CONTAINS(json, "\"legacy\":false");
    CHECK_CONTAINS(json, "\"name\":\"first\"");
    CHECK_CONTAINS(json, "\"revoked_at\":null");
    CHECK(strstr(json, secret) == NULL); /* never the secret */
    cg_string_free(json);
    cg_string_free(secret);

    CHECK_ERR(cg_can_generate_api_key(m, NULL, &el), CG_INVALID_ARGUMENT, "user_id is NULL");
    CHECK_ERR(cg_can_generate_api_key(m, "hank", NULL), CG_INVALID_ARGUMENT, "eligibility_out is NULL");
    CHECK_ERR(cg_create_api_key(m, "hank", NULL, NULL, &key), CG_INVALID_ARGUMENT, "secret_out is NULL");
    CHECK_ERR(cg_create_api_key(m, "hank", NULL, &secret, NULL), CG_INVALID_ARGUMENT, "key_out is NULL");
    CHECK_ERR(cg_create_api_key(m, "hank", BAD_UTF8, &secret, &key), CG_INVALID_ARGUMENT,
              "name is not valid UTF-8");
    CHECK_ERR(cg_create_api_key(m, "hank", LONG_TEXT, &secret, &key), CG_INVALID_ARGUMENT, "name");
    CHECK_ERR(cg_list_api_keys_json(m, BAD_UTF8, &json), CG_INVALID_ARGUMENT, "not valid UTF-8");
    CHECK_ERR(cg_list_api_keys_json(m, "hank", NULL), CG_INVALID_ARGUMENT, "json_out is NULL");
    cg_close(m);
}

static void test_key_limit(void) {
    setenv("MAX_ACTIVE_KEYS_PER_USER", "2", 1);
    cg_manager *m = open_temp();
    unsetenv("MAX_ACTIVE_KEYS_PER_USER");
    cg_api_key key;
    char *a = paid_key(m, "ivy", "pi_i", &key);
    char *b = NULL, *c = NULL;
    cg_api_key second, denied;
    CHECK_OK(cg_create_api_key(m, "ivy", NULL, &b, &second));
    CHECK_ERR(cg_create_api_key(m, "ivy", NULL, &c, &denied), CG_LIMIT_REACHED, "max_active_keys_per_user");
    CHECK(cg_status_http(CG_LIMIT_REACHED) == 403 && c == NULL && denied.key_id[0] == '\0');
    CHECK_OK(cg_revoke_api_key(m, second.key_id, "ivy"));
    CHECK_OK(cg_create_api_key(m, "ivy", NULL, &c, &key));
    cg_string_free(a);
    cg_string_free(b);
    cg_string_free(c);

    char *json = NULL;
    CHECK_OK(cg_metrics_json(m, &json));
    CHECK_CONTAINS(json, "\"key_generation_attempts_total\":4");
    CHECK_CONTAINS(json, "\"key_generation_denied_total\":1");
    cg_string_free(json);
    cg_close(m);
}

static void test_verify_and_revoke(void) {
    cg_manager *m = open_temp();
    cg_api_key key;
    char *secret = paid_key(m, "jack", "pi_j", &key);

    cg_verification v;
    CHECK_OK(cg_verify_api_key_credits(m, secret, CG_MICROS_PER_CREDIT, &v));
    CHECK(strcmp(v.user_id, "jack") == 0 && strcmp(v.key_id, key.key_id) == 0);
    CHECK_EQ_I64(v.available_micros, CREDITS(5000));
    CHECK_OK(cg_verify_api_key_credits(m, secret, 0, &v));
    CHECK_ERR(cg_verify_api_key_credits(m, secret, CREDITS(5001), &v), CG_INSUFFICIENT_CREDITS,
              "5001 required, 5000 available");
    CHECK(v.user_id[0] == '\0');
    CHECK_ERR(cg_verify_api_key_credits(m, secret, -1, &v), CG_INVALID_ARGUMENT, "min_credits");
    CHECK_ERR(cg_verify_api_key_credits(m, "short", CG_MICROS_PER_CREDIT, &v), CG_INVALID_API_KEY, "malformed");
    CHECK(cg_status_http(CG_INVALID_API_KEY) == 401);
    CHECK_ERR(cg_verify_api_key_credits(m, "legacy-unknown-key-123", CG_MICROS_PER_CREDIT, &v), CG_INVALID_API_KEY,
              "unknown API key");
    /* Our prefix and length with a changed character: the checksum fails. */
    char tampered[64];
    snprintf(tampered, sizeof tampered, "%s", secret);
    tampered[10] = tampered[10] == 'a' ? 'b' : 'a';
    CHECK_ERR(cg_verify_api_key_credits(m, tampered, CG_MICROS_PER_CREDIT, &v), CG_INVALID_API_KEY, "checksum");
    CHECK(strstr(cg_last_error(), secret) == NULL); /* never the secret */
    CHECK_ERR(cg_verify_api_key_credits(m, NULL, 1, &v), CG_INVALID_ARGUMENT, "api_key is NULL");
    CHECK_ERR(cg_verify_api_key_credits(m, BAD_UTF8, 1, &v), CG_INVALID_ARGUMENT, "api_key is not valid UTF-8");
    CHECK_ERR(cg_verify_api_key_credits(m, secret, 1, NULL), CG_INVALID_ARGUMENT, "verification_out is NULL");

    /* Revoke: another user's key is not found; then revoked twice is fine. */
    CHECK_ERR(cg_revoke_api_key(m, key.key_id, "someone-else"), CG_NOT_FOUND, key.key_id);
    CHECK_OK(cg_revoke_api_key(m, key.key_id, NULL));
    CHECK_OK(cg_revoke_api_key(m, key.key_id, "jack"));
    CHECK_ERR(cg_verify_api_key_credits(m, secret, CG_MICROS_PER_CREDIT, &v), CG_INVALID_API_KEY, "revoked");
    char *json = NULL;
    CHECK_OK(cg_list_api_keys_json(m, "jack", &json));
    CHECK(strstr(json, "\"revoked_at\":\"20") != NULL);
    cg_string_free(json);
    CHECK_ERR(cg_revoke_api_key(m, "01890000-0000-7000-8000-000000000000", NULL), CG_NOT_FOUND, "no API key");
    CHECK_ERR(cg_revoke_api_key(m, "nope", NULL), CG_INVALID_ARGUMENT, "not a UUID");
    CHECK_ERR(cg_revoke_api_key(m, NULL, NULL), CG_INVALID_ARGUMENT, "key_id is NULL");
    CHECK_ERR(cg_revoke_api_key(m, key.key_id, BAD_UTF8), CG_INVALID_ARGUMENT, "user_id is not valid UTF-8");
    CHECK_ERR(cg_revoke_api_key(NULL, key.key_id, NULL), CG_INVALID_ARGUMENT, "manager is NULL");
    cg_string_free(secret);
    cg_close(m);
}

/* Key lifecycle and spend caps: disable/enable, expiry, rotation with grace,
 * set_key_limit and cg_last_error_limit_source. */
static void test_key_policy(void) {
    cg_manager *m = open_temp();
    cg_api_key key;
    char *secret = paid_key(m, "kate", "pi_k", &key);
    cg_verification v;
    cg_hold h;
    cg_usage_charge c;

    /* Disabled: the unknown-key 401, but usage is still charged. */
    CHECK_OK(cg_disable_api_key(m, key.key_id, "kate"));
    CHECK_OK(cg_disable_api_key(m, key.key_id, NULL));
    CHECK_ERR(cg_verify_api_key_credits(m, secret, CG_MICROS_PER_CREDIT, &v), CG_INVALID_API_KEY, "unknown API key");
    CHECK_ERR(cg_reserve(m, secret, CREDITS(1), NULL, 0, NULL, &h), CG_INVALID_API_KEY, "unknown API key");
    CHECK_OK(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 1000}, NULL, &c));
    CHECK_EQ_I64(c.charged_micros, CREDITS(1));
    CHECK_ERR(cg_disable_api_key(m, key.key_id, "someone-else"), CG_NOT_FOUND, key.key_id);
    CHECK_OK(cg_enable_api_key(m, key.key_id, NULL));
    CHECK_OK(cg_verify_api_key_credits(m, secret, CG_MICROS_PER_CREDIT, &v));

    /* Expiry: 1 (a microsecond after the epoch) expires it; 0 clears it. */
    CHECK_OK(cg_set_api_key_expiry(m, key.key_id, 1, NULL));
    CHECK_ERR(cg_verify_api_key_credits(m, secret, CG_MICROS_PER_CREDIT, &v), CG_INVALID_API_KEY, "unknown API key");
    CHECK_OK(cg_set_api_key_expiry(m, key.key_id, 0, NULL));
    CHECK_OK(cg_verify_api_key_credits(m, secret, CG_MICROS_PER_CREDIT, &v));
    CHECK_ERR(cg_set_api_key_expiry(m, key.key_id, -5, NULL), CG_INVALID_ARGUMENT, "expires_at");

    /* A cap: the 402 says "key"; the account's own limit says "account". */
    /* The usage charged above, today, counts against a new daily cap. */
    CHECK_OK(cg_set_key_limit(m, key.key_id, CREDITS(10), "daily", NULL));
    CHECK_OK(cg_verify_api_key_credits(m, secret, CREDITS(9), &v));
    CHECK(strcmp(cg_last_error_limit_source(), "") == 0);
    CHECK_ERR(cg_verify_api_key_credits(m, secret, CREDITS(10), &v), CG_INSUFFICIENT_CREDITS, "9 available under");
    CHECK(strcmp(cg_last_error_limit_source(), "key") == 0);
    CHECK_ERR(cg_reserve(m, secret, CREDITS(11), NULL, 0, NULL, &h), CG_INSUFFICIENT_CREDITS, "11 required");
    CHECK(strcmp(cg_last_error_limit_source(), "key") == 0);
    CHECK_OK(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 4000}, NULL, &c));
    char *json = NULL;
    CHECK_OK(cg_list_api_keys_json(m, "kate", &json));
    CHECK_CONTAINS(json, "\"spend_limit_micros\":10000000");
    CHECK_CONTAINS(json, "\"spend_window\":\"daily\"");
    CHECK_CONTAINS(json, "\"spent_in_window_micros\":5000000");
    CHECK_CONTAINS(json, "\"window_resets_at\":\"20");
    CHECK_CONTAINS(json, "\"disabled\":false");
    cg_string_free(json);
    CHECK_OK(cg_set_key_limit(m, key.key_id, 0, "lifetime", NULL)); /* a cap of zero is a cap */
    CHECK_ERR(cg_verify_api_key_credits(m, secret, 1, &v), CG_INSUFFICIENT_CREDITS, "");
    CHECK(strcmp(cg_last_error_limit_source(), "key") == 0);
    CHECK_ERR(cg_set_key_limit(m, key.key_id, -1, "daily", NULL), CG_INVALID_ARGUMENT, "limit"); /* no magic -1 */
    CHECK_ERR(cg_set_key_limit(m, key.key_id, 5, NULL, NULL), CG_INVALID_ARGUMENT, "window is NULL");
    CHECK_OK(cg_set_key_limit(m, key.key_id, 0, NULL, NULL)); /* removes the cap */
    CHECK_ERR(cg_verify_api_key_credits(m, secret, CREDITS(100000), &v), CG_INSUFFICIENT_CREDITS, "available");
    CHECK(strcmp(cg_last_error_limit_source(), "account") == 0);
    CHECK_OK(cg_verify_api_key_credits(m, secret, 0, &v));
    CHECK(strcmp(cg_last_error_limit_source(), "") == 0);
    CHECK_ERR(cg_set_key_limit(m, key.key_id, 1, "hourly", NULL), CG_INVALID_ARGUMENT, "window");
    CHECK_ERR(cg_set_key_limit(m, key.key_id, -2, "daily", NULL), CG_INVALID_ARGUMENT, "limit");
    CHECK_ERR(cg_set_key_limit(m, key.key_id, 1, BAD_UTF8, NULL), CG_INVALID_ARGUMENT, "window is not valid UTF-8");

    /* Rotation: grace 0 ends the old key now; the new secret works. */
    char *fresh = NULL;
    cg_api_key fresh_key;
    CHECK_ERR(cg_rotate_api_key(m, key.key_id, -1, NULL, &fresh, &fresh_key), CG_INVALID_ARGUMENT, "grace_seconds");
    CHECK(fresh == NULL);
    CHECK_OK(cg_rotate_api_key(m, key.key_id, 0, "kate", &fresh, &fresh_key));
    CHECK(fresh != NULL && strcmp(fresh, secret) != 0 && strcmp(fresh_key.key_id, key.key_id) != 0);
    CHECK_ERR(cg_verify_api_key_credits(m, secret, CG_MICROS_PER_CREDIT, &v), CG_INVALID_API_KEY, "unknown API key");
    CHECK_OK(cg_verify_api_key_credits(m, fresh, CG_MICROS_PER_CREDIT, &v));
    CHECK(strcmp(v.key_id, fresh_key.key_id) == 0);
    CHECK_OK(cg_list_api_keys_json(m, "kate", &json));
    CHECK_CONTAINS(json, fresh_key.key_id);
    CHECK_CONTAINS(json, "\"rotated_to\":\"");
    cg_string_free(json);
    CHECK_ERR(cg_rotate_api_key(m, key.key_id, 0, NULL, NULL, &fresh_key), CG_INVALID_ARGUMENT, "secret_out is NULL");
    cg_string_free(fresh);
    cg_string_free(secret);
    cg_close(m);
}

static void test_import(void) {
    cg_manager *m = open_temp();
    cg_api_key key;
    cg_entry e;
    CHECK_OK(cg_add_credits(m, "kate", CREDITS(10), NULL, NULL, &e));
    CHECK_OK(cg_import_api_key(m, "kate", "legacy-secret-0001", NULL, "old", &key));
    CHECK(key.legacy && strlen(key.key_id) == 36 && strcmp(key.prefix, "lega") == 0);

    /* A legacy key works without the credit gate and is charged. */
    cg_verification v;
    CHECK_OK(cg_verify_api_key_credits(m, "legacy-secret-0001", CG_MICROS_PER_CREDIT, &v));
    CHECK(strcmp(v.key_id, key.key_id) == 0);
    cg_usage_charge c;
    CHECK_OK(cg_record_usage(m, "legacy-secret-0001", NULL, &(cg_usage){.input_tokens = 2000}, NULL, &c));
    CHECK_EQ_I64(c.charged_micros, CREDITS(2));

    /* By SHA-256 of "hashed-legacy-key". */
    const char *sha = "2c0d2e4b8c2e2d5f0f2b8a0c5d8e8f6a1b3c4d5e6f708192a3b4c5d6e7f80910";
    CHECK_OK(cg_import_api_key(m, "kate", NULL, sha, NULL, &key));
    CHECK(key.legacy && key.prefix[0] == '\0');

    CHECK_ERR(cg_import_api_key(m, "kate", "legacy-secret-0002", sha, NULL, &key), CG_INVALID_ARGUMENT,
              "exactly one");
    CHECK_ERR(cg_import_api_key(m, "kate", NULL, NULL, NULL, &key), CG_INVALID_ARGUMENT, "exactly one");
    CHECK_ERR(cg_import_api_key(m, "kate", NULL, "ABC", NULL, &key), CG_INVALID_ARGUMENT, "secret_sha256");
    CHECK_ERR(cg_import_api_key(m, "kate", "short", NULL, NULL, &key), CG_INVALID_ARGUMENT, "legacy secret");
    CHECK_ERR(cg_import_api_key(m, "kate", BAD_UTF8, NULL, NULL, &key), CG_INVALID_ARGUMENT,
              "secret is not valid UTF-8");
    CHECK_ERR(cg_import_api_key(m, "kate", NULL, BAD_UTF8, NULL, &key), CG_INVALID_ARGUMENT,
              "secret_sha256 is not valid UTF-8");
    CHECK_ERR(cg_import_api_key(m, "kate", "legacy-secret-0003", NULL, BAD_UTF8, &key), CG_INVALID_ARGUMENT,
              "name is not valid UTF-8");
    CHECK_ERR(cg_import_api_key(m, "other", "legacy-secret-0001", NULL, NULL, &key), CG_IDEMPOTENCY_CONFLICT,
              "another user");
    CHECK_ERR(cg_import_api_key(m, "kate", "legacy-secret-0004", NULL, NULL, NULL), CG_INVALID_ARGUMENT,
              "key_out is NULL");

    /* Imported keys do not count as a first key. */
    cg_key_eligibility el;
    CHECK_OK(cg_can_generate_api_key(m, "kate", &el));
    CHECK(el.is_first_key && !el.allowed);
    cg_close(m);
}

/* ----- usage and holds ------------------------------------------------------------ */

static void test_record_usage(void) {
    cg_manager *m = open_temp();
    cg_api_key key;
    char *secret = paid_key(m, "liam", "pi_l", &key);

    cg_usage_charge c;
    CHECK_OK(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 1500}, "req-1", &c));
    CHECK_EQ_I64(c.tokens, 1500);
    CHECK_EQ_I64(c.charged_micros, 1500000);
    CHECK_EQ_I64(c.balance_micros, CREDITS(5000) - 1500000);
    CHECK(!c.overdraft && !c.replayed && strlen(c.entry_id) == 36 && strcmp(c.user_id, "liam") == 0);
    CHECK_OK(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 1500}, "req-1", &c));
    CHECK(c.replayed);
    CHECK_ERR(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 1501}, "req-1", &c),
              CG_IDEMPOTENCY_CONFLICT, "usage:req-1");
    CHECK(cg_status_http(CG_IDEMPOTENCY_CONFLICT) == 409);

    /* By key id, with a model price: ceil((1 * 1500 + 1 * 3000) / 1000) = 5 micros. */
    CHECK_OK(cg_set_model_price(m, "tiny", 1500, 3000));
    CHECK_OK(cg_record_usage(m, NULL, key.key_id, &(cg_usage){.input_tokens = 1, .output_tokens = 1, .model = "tiny"},
             NULL, &c));
    CHECK_EQ_I64(c.charged_micros, 5);
    CHECK_OK(cg_record_usage(m, secret, NULL, &(cg_usage){0}, "req-zero", &c)); /* zero tokens is valid */
    CHECK_EQ_I64(c.charged_micros, 0);

    /* Usage is never refused for balance: it overdraws, then verify is 402. */
    CHECK_OK(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 6000000}, NULL, &c));
    CHECK(c.overdraft && c.balance_micros < 0);
    cg_verification v;
    CHECK_STATUS(cg_verify_api_key_credits(m, secret, CG_MICROS_PER_CREDIT, &v), CG_INSUFFICIENT_CREDITS);

    CHECK_ERR(cg_record_usage(m, secret, key.key_id, &(cg_usage){.input_tokens = 1}, NULL, &c), CG_INVALID_ARGUMENT,
              "exactly one");
    CHECK_ERR(cg_record_usage(m, NULL, NULL, &(cg_usage){.input_tokens = 1}, NULL, &c), CG_INVALID_ARGUMENT,
              "exactly one");
    CHECK_ERR(cg_record_usage(m, secret, NULL, NULL, NULL, &c), CG_INVALID_ARGUMENT, "usage is NULL");
    CHECK_ERR(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = -1}, NULL, &c), CG_INVALID_ARGUMENT,
              "input_tokens");
    CHECK_ERR(cg_record_usage(m, secret, NULL, &(cg_usage){.output_tokens = -1}, NULL, &c), CG_INVALID_ARGUMENT,
              "output_tokens");
    CHECK_ERR(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 1000000001}, NULL, &c),
              CG_INVALID_ARGUMENT, "1000000001");
    CHECK_ERR(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = INT64_MAX}, NULL, &c), CG_INVALID_ARGUMENT,
              "input_tokens");
    CHECK_ERR(cg_record_usage(m, "sk_unknown_but_long_enough", NULL, &(cg_usage){.input_tokens = 1}, NULL, &c),
              CG_INVALID_API_KEY,
              "API key");
    CHECK_ERR(cg_record_usage(m, NULL, "01890000-0000-7000-8000-000000000000", &(cg_usage){.input_tokens = 1}, NULL,
              &c),
              CG_INVALID_API_KEY, "no API key");
    CHECK_ERR(cg_record_usage(m, NULL, "bad-id", &(cg_usage){.input_tokens = 1}, NULL, &c), CG_INVALID_ARGUMENT,
              "not a UUID");
    CHECK_ERR(cg_record_usage(m, BAD_UTF8, NULL, &(cg_usage){.input_tokens = 1}, NULL, &c), CG_INVALID_ARGUMENT,
              "api_key is not valid UTF-8");
    CHECK_ERR(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 1, .model = BAD_UTF8}, NULL, &c),
              CG_INVALID_ARGUMENT,
              "model is not valid UTF-8");
    CHECK_ERR(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 1}, BAD_UTF8, &c), CG_INVALID_ARGUMENT,
              "request_id is not valid UTF-8");
    CHECK_ERR(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 1}, LONG_TEXT, &c), CG_INVALID_ARGUMENT,
              "request_id");
    CHECK_ERR(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 1}, NULL, NULL), CG_INVALID_ARGUMENT,
              "charge_out is NULL");
    cg_string_free(secret);
    cg_close(m);
}

/* A call's worst case: input tokens at the input rate, output tokens at the
   output rate, exactly as the charge will price them. */
static void test_usage_holds(void) {
    cg_manager *m = open_temp();
    cg_api_key key;
    char *secret = paid_key(m, "una", "pi_u", &key);
    CHECK_OK(cg_set_model_price(m, "dear", CREDITS(1), CREDITS(20)));
    cg_hold h;
    CHECK_OK(cg_reserve_usage(m, secret, &(cg_usage){.input_tokens = 1500, .output_tokens = 101, .model = "dear"}, 0,
             "call-1", &h));
    CHECK_EQ_I64(h.amount_micros, 3520000); /* 1.5 + 2.02 credits */
    CHECK(h.status == CG_HOLD_ACTIVE && !h.replayed);
    cg_usage_charge c;
    CHECK_OK(cg_settle(m, h.hold_id, 0, &(cg_usage){.input_tokens = 1500, .output_tokens = 101}, &c));
    CHECK_EQ_I64(c.charged_micros, h.amount_micros);
    CHECK_OK(cg_reserve_usage(m, secret, &(cg_usage){.input_tokens = 1500, .output_tokens = 101, .model = "dear"}, 0,
             "call-1", &h));
    CHECK(h.replayed && h.status == CG_HOLD_SETTLED);
    /* The input-priced quote would fit in what is left; the real one does not. */
    CHECK_OK(cg_deduct_credits(m, "una", CREDITS(5000) - 3520000 - CREDITS(4), NULL, &(cg_entry){0}));
    CHECK_OK(cg_reserve(m, secret, 0, &(cg_usage){.input_tokens = 1100, .model = "dear"}, 0, NULL, &h));
    CHECK_OK(cg_release(m, h.hold_id));
    CHECK_ERR(cg_reserve_usage(m, secret, &(cg_usage){.input_tokens = 100, .output_tokens = 1000, .model = "dear"}, 0,
              NULL, &h), CG_INSUFFICIENT_CREDITS, "required");
    CHECK_ERR(cg_reserve_usage(m, secret, &(cg_usage){.input_tokens = 1, .output_tokens = -1}, 0, NULL, &h),
              CG_INVALID_ARGUMENT, "output_tokens");
    CHECK_ERR(cg_reserve_usage(m, NULL, &(cg_usage){.input_tokens = 1, .output_tokens = 1}, 0, NULL, &h),
              CG_INVALID_ARGUMENT, "api_key is NULL");
    CHECK_ERR(cg_reserve_usage(m, secret, &(cg_usage){.input_tokens = 1, .output_tokens = 1}, 0, NULL, NULL),
              CG_INVALID_ARGUMENT, "hold_out is NULL");
    CHECK_ERR(cg_reserve_usage(NULL, secret, &(cg_usage){.input_tokens = 1, .output_tokens = 1}, 0, NULL, &h),
              CG_INVALID_ARGUMENT, "manager is NULL");
    cg_string_free(secret);
    cg_close(m);
}

/* errors_total counts every error a C caller gets once, by code: also the
   ones the boundary itself finds (a NULL or non-UTF-8 argument). */
static void test_boundary_errors_are_counted(void) {
    cg_manager *m = open_temp();
    cg_entry e;
    CHECK_ERR(cg_add_credits(m, NULL, CREDITS(1), NULL, NULL, &e), CG_INVALID_ARGUMENT, "user_id");
    CHECK_ERR(cg_add_credits(m, BAD_UTF8, CREDITS(1), NULL, NULL, &e), CG_INVALID_ARGUMENT, "UTF-8");
    CHECK_ERR(cg_add_credits(m, "u", CREDITS(1), NULL, NULL, NULL), CG_INVALID_ARGUMENT, "entry_out");
    CHECK_ERR(cg_add_credits(m, "u", -1, NULL, NULL, &e), CG_INVALID_ARGUMENT, "amount");
    CHECK_ERR(cg_deduct_credits(m, "u", CREDITS(1), NULL, &e), CG_INSUFFICIENT_CREDITS, "available");
    CHECK_OK(cg_add_credits(m, "u", CREDITS(1), NULL, NULL, &e));
    char *text = NULL;
    CHECK_OK(cg_metrics_prometheus(m, &text));
    CHECK_CONTAINS(text, "creditgate_errors_total{code=\"invalid_argument\"} 4");
    CHECK_CONTAINS(text, "creditgate_errors_total{code=\"insufficient_credits\"} 1");
    cg_string_free(text);
    cg_close(m);
}

static void test_holds(void) {
    setenv("MAX_ACTIVE_HOLDS_PER_USER", "3", 1);
    cg_manager *m = open_temp();
    unsetenv("MAX_ACTIVE_HOLDS_PER_USER");
    cg_api_key key;
    char *secret = paid_key(m, "mia", "pi_m", &key);

    cg_hold h;
    CHECK_OK(cg_reserve(m, secret, CREDITS(1000), NULL, 0, "stream-1", &h));
    CHECK_EQ_I64(h.amount_micros, CREDITS(1000));
    CHECK(strlen(h.hold_id) == 36 && strcmp(h.user_id, "mia") == 0 && !h.replayed);
    CHECK(h.expires_at_unix_micros > 1700000000LL * 1000000);
    char hold_id[CG_ID_SIZE];
    memcpy(hold_id, h.hold_id, sizeof hold_id);
    CHECK_OK(cg_reserve(m, secret, CREDITS(1000), NULL, 60, "stream-1", &h));
    CHECK(h.replayed && strcmp(h.hold_id, hold_id) == 0);
    CHECK_ERR(cg_reserve(m, secret, CREDITS(999), NULL, 60, "stream-1", &h), CG_IDEMPOTENCY_CONFLICT,
              "stream-1");

    /* Holds lower available, not balance. */
    char *json = NULL;
    CHECK_OK(cg_account_json(m, "mia", &json));
    CHECK_CONTAINS(json, "\"held_micros\":1000000000");
    CHECK_CONTAINS(json, "\"available_micros\":4000000000");
    CHECK_CONTAINS(json, "\"balance_micros\":5000000000");
    cg_string_free(json);
    CHECK_ERR(cg_reserve(m, secret, CREDITS(4001), NULL, 0, NULL, &h), CG_INSUFFICIENT_CREDITS,
              "4001 required, 4000 available");
    CHECK_ERR(cg_deduct_credits(m, "mia", CREDITS(4001), NULL, &(cg_entry){0}), CG_INSUFFICIENT_CREDITS,
              "4000 available");

    /* Tokens hold: the price of 2,000 tokens at the default 1 credit / 1k. */
    cg_hold th;
    CHECK_OK(cg_reserve(m, secret, 0, &(cg_usage){.input_tokens = 2000}, 30, NULL, &th));
    CHECK_EQ_I64(th.amount_micros, CREDITS(2));
    cg_hold third;
    CHECK_OK(cg_reserve(m, secret, 0, &(cg_usage){0}, 30, NULL, &third)); /* at least 1 micro-credit */
    CHECK_EQ_I64(third.amount_micros, 1);
    CHECK_ERR(cg_reserve(m, secret, 1, NULL, 30, NULL, &h), CG_LIMIT_REACHED, "max_active_holds_per_user");
    CHECK_OK(cg_release(m, third.hold_id));
    CHECK_OK(cg_release(m, third.hold_id)); /* a no-op */

    /* Settle by tokens, exactly once. */
    cg_usage_charge c;
    CHECK_OK(cg_settle(m, hold_id, 0, &(cg_usage){.input_tokens = 1200, .output_tokens = 300}, &c));
    CHECK_EQ_I64(c.charged_micros, 1500000);
    CHECK(!c.replayed && strcmp(c.user_id, "mia") == 0);
    CHECK_OK(cg_settle(m, hold_id, 0, &(cg_usage){.input_tokens = 1200, .output_tokens = 300}, &c));
    CHECK(c.replayed);
    CHECK_ERR(cg_settle(m, hold_id, 0, &(cg_usage){.input_tokens = 1200, .output_tokens = 301}, &c),
              CG_IDEMPOTENCY_CONFLICT, "usage:stream-1");
    /* A fallback record_usage with the hold's request id cannot charge twice. */
    CHECK_OK(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 1200, .output_tokens = 300}, "stream-1", &c));
    CHECK(c.replayed);
    /* Settle by credits, also after release. */
    CHECK_OK(cg_release(m, th.hold_id));
    CHECK_OK(cg_settle(m, th.hold_id, 2500000, NULL, &c));
    CHECK_EQ_I64(c.charged_micros, 2500000);

    int64_t balance = 0;
    CHECK_OK(cg_balance(m, "mia", &balance));
    CHECK_EQ_I64(balance, CREDITS(5000) - 1500000 - 2500000);

    CHECK_ERR(cg_reserve(m, secret, -5, NULL, 0, NULL, &h), CG_INVALID_ARGUMENT, "credits");
    CHECK_ERR(cg_reserve(m, secret, 5, &(cg_usage){.input_tokens = 10}, 0, NULL, &h), CG_INVALID_ARGUMENT,
              "either credits_micros");
    CHECK_ERR(cg_reserve(m, secret, 5, &(cg_usage){.model = "gpt"}, 0, NULL, &h), CG_INVALID_ARGUMENT,
              "either credits_micros");
    CHECK_ERR(cg_reserve(m, secret, 0, NULL, 0, NULL, &h), CG_INVALID_ARGUMENT, "needs credits_micros or a usage");
    CHECK_ERR(cg_reserve_usage(m, secret, NULL, 0, NULL, &h), CG_INVALID_ARGUMENT, "usage is NULL");
    CHECK_ERR(cg_reserve(m, secret, 0, &(cg_usage){.input_tokens = -1}, 0, NULL, &h), CG_INVALID_ARGUMENT, "tokens");
    CHECK_ERR(cg_reserve(m, secret, 5, NULL, -1, NULL, &h), CG_INVALID_ARGUMENT, "ttl_seconds");
    CHECK_ERR(cg_reserve(m, secret, 5, NULL, 86401, NULL, &h), CG_INVALID_ARGUMENT, "86401");
    CHECK_ERR(cg_reserve(m, "not-a-key-at-all", 5, NULL, 0, NULL, &h), CG_INVALID_API_KEY, "unknown");
    CHECK_ERR(cg_reserve(m, NULL, 5, NULL, 0, NULL, &h), CG_INVALID_ARGUMENT, "api_key is NULL");
    CHECK_ERR(cg_reserve(m, secret, 0, &(cg_usage){.input_tokens = 5, .model = BAD_UTF8}, 0, NULL, &h),
              CG_INVALID_ARGUMENT, "model is not valid UTF-8");
    CHECK_ERR(cg_reserve(m, secret, 5, NULL, 0, BAD_UTF8, &h), CG_INVALID_ARGUMENT,
              "request_id is not valid UTF-8");
    CHECK_ERR(cg_reserve(m, secret, 5, NULL, 0, NULL, NULL), CG_INVALID_ARGUMENT, "hold_out is NULL");

    /* A replay reports where the first hold stands. */
    CHECK_OK(cg_reserve(m, secret, CREDITS(1000), NULL, 30, "stream-1", &h));
    CHECK(h.replayed && h.status == CG_HOLD_SETTLED);
    CHECK_OK(cg_reserve(m, secret, 0, &(cg_usage){.input_tokens = 2000}, 30, "retry-me", &h));
    CHECK(!h.replayed && h.status == CG_HOLD_ACTIVE);
    CHECK_OK(cg_release(m, h.hold_id));
    CHECK_OK(cg_reserve(m, secret, 0, &(cg_usage){.input_tokens = 2000}, 30, "retry-me", &h));
    CHECK(h.replayed && h.status == CG_HOLD_RELEASED);

    const char *unknown = "01890000-0000-7000-8000-000000000000";
    CHECK_ERR(cg_settle(m, unknown, 0, &(cg_usage){.input_tokens = 1}, &c), CG_NOT_FOUND, "no hold");
    CHECK_ERR(cg_settle(m, "zzz", 0, &(cg_usage){.input_tokens = 1}, &c), CG_INVALID_ARGUMENT, "not a UUID");
    CHECK_ERR(cg_settle(m, hold_id, 5, &(cg_usage){.input_tokens = 1}, &c), CG_INVALID_ARGUMENT,
              "either credits_micros");
    CHECK_ERR(cg_settle(m, hold_id, 0, NULL, &c), CG_INVALID_ARGUMENT, "needs credits_micros or a usage");
    CHECK_ERR(cg_settle(m, hold_id, -5, NULL, &c), CG_INVALID_ARGUMENT, "credits");
    CHECK_ERR(cg_settle(m, hold_id, 0, &(cg_usage){.input_tokens = -1}, &c), CG_INVALID_ARGUMENT, "input_tokens");
    CHECK_ERR(cg_settle(m, NULL, 0, &(cg_usage){.input_tokens = 1}, &c), CG_INVALID_ARGUMENT, "hold_id is NULL");
    CHECK_ERR(cg_settle(m, hold_id, 0, &(cg_usage){.input_tokens = 1, .model = BAD_UTF8}, &c), CG_INVALID_ARGUMENT,
              "model is not valid UTF-8");
    CHECK_ERR(cg_settle(m, hold_id, 0, &(cg_usage){.input_tokens = 1}, NULL), CG_INVALID_ARGUMENT,
              "charge_out is NULL");
    CHECK_ERR(cg_release(m, unknown), CG_NOT_FOUND, "no hold");
    CHECK_ERR(cg_release(m, BAD_UTF8), CG_INVALID_ARGUMENT, "hold_id is not valid UTF-8");
    CHECK_ERR(cg_release(m, NULL), CG_INVALID_ARGUMENT, "hold_id is NULL");
    CHECK_ERR(cg_release(NULL, hold_id), CG_INVALID_ARGUMENT, "manager is NULL");
    cg_string_free(secret);
    cg_close(m);
}

static void test_model_prices(void) {
    cg_manager *m = open_temp();
    char *json = NULL;
    CHECK_OK(cg_list_model_prices_json(m, &json));
    CHECK(strcmp(json, "{}") == 0);
    cg_string_free(json);
    CHECK_OK(cg_set_model_price(m, "gpt-x", 2500000, 10000000));
    CHECK_OK(cg_set_model_price(m, "free", 0, 0));
    CHECK_OK(cg_list_model_prices_json(m, &json));
    CHECK_CONTAINS(json, "\"gpt-x\":{\"cache_write_per_1k_micros\":null,\"cached_input_per_1k_micros\":null,"
                         "\"input_per_1k_micros\":2500000,\"output_per_1k_micros\":10000000,\"request_fee_micros\":0}");
    CHECK_CONTAINS(json, "\"free\":{");
    cg_string_free(json);
    CHECK_ERR(cg_set_model_price(m, "gpt-x", -1, 0), CG_INVALID_ARGUMENT, "input_per_1k");
    CHECK_ERR(cg_set_model_price(m, "gpt-x", 0, INT64_MAX), CG_INVALID_ARGUMENT, "output_per_1k");
    CHECK_ERR(cg_set_model_price(m, NULL, 0, 0), CG_INVALID_ARGUMENT, "model is NULL");
    CHECK_ERR(cg_set_model_price(m, BAD_UTF8, 0, 0), CG_INVALID_ARGUMENT, "model is not valid UTF-8");
    CHECK_ERR(cg_set_model_price(m, "", 0, 0), CG_INVALID_ARGUMENT, "model must be");
    CHECK_ERR(cg_list_model_prices_json(m, NULL), CG_INVALID_ARGUMENT, "json_out is NULL");
    CHECK_ERR(cg_list_model_prices_json(NULL, &json), CG_INVALID_ARGUMENT, "manager is NULL");
    cg_close(m);
}

/* ----- audit, report, metrics ----------------------------------------------- */

static void test_audit_report_metrics(void) {
    cg_manager *m = open_temp();
    cg_api_key key;
    char *secret = paid_key(m, "noah", "pi_n", &key);
    cg_usage_charge c;
    CHECK_OK(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 1000, .output_tokens = 1000}, NULL, &c));
    cg_entry e;
    CHECK_OK(cg_deduct_credits(m, "noah", CREDITS(3), NULL, &e));
    CHECK_OK(cg_reverse_payment(m, "pi_n", 100, NULL, "re_n", &e));
    cg_key_eligibility el;
    CHECK_OK(cg_can_generate_api_key(m, "olga", &el));
    char *olga_secret = (char *)1;
    CHECK_STATUS(cg_create_api_key(m, "olga", NULL, &olga_secret, &key), CG_INSUFFICIENT_CREDITS);

    char *json = NULL;
    CHECK_OK(cg_audit_json(m, &json));
    CHECK_CONTAINS(json, "\"ok\":true");
    CHECK_CONTAINS(json, "\"accounts_checked\":2");
    CHECK_CONTAINS(json, "\"entries_checked\":4");
    CHECK_CONTAINS(json, "\"mismatches\":[]");
    cg_string_free(json);

    CHECK_OK(cg_report_json(m, &json));
    const char *report[] = {"\"users\":2", "\"paying_users\":1", "\"users_attempted_key\":2",
                            "\"key_generation_attempts\":2", "\"key_generation_successes\":1",
                            "\"purchase_conversion_rate\":\"0.5\"", "\"credits_purchased_micros\":5000000000",
                            "\"revenue_usd_minor\":400", "\"revenue_per_paying_user_usd_minor\":400",
                            "\"credits_used_micros\":5000000", "\"outstanding_balance_micros\":3995000000",
                            "\"overdraft_receivable_micros\":0", "\"schema_version\":",
                            "\"library_schema_version\":"};
    for (size_t i = 0; i < sizeof report / sizeof *report; i++) CHECK_CONTAINS(json, report[i]);
    cg_string_free(json);

    CHECK_OK(cg_metrics_json(m, &json));
    const char *metrics[] = {"\"purchases_total\":1", "\"credits_purchased_micros_total\":5000000000",
                             "\"usage_charges_total\":1", "\"tokens_metered_total\":2000",
                             "\"credits_charged_micros_total\":2000000", "\"key_eligibility_checks_total\":1",
                             "\"key_generation_success_total\":1", "\"key_generation_denied_total\":1",
                             "\"errors_total\":1", "\"holds_total\":0"};
    for (size_t i = 0; i < sizeof metrics / sizeof *metrics; i++) CHECK_CONTAINS(json, metrics[i]);
    cg_string_free(json);

    CHECK_OK(cg_metrics_prometheus(m, &json));
    CHECK_CONTAINS(json, "# TYPE creditgate_usage_charges_total counter");
    CHECK_CONTAINS(json, "creditgate_errors_total{code=\"insufficient_credits\"} 1");
    CHECK_CONTAINS(json, "creditgate_charge_seconds_count");
    CHECK_CONTAINS(json, "creditgate_verify_seconds_bucket");
    cg_string_free(json);

    json = (char *)1;
    CHECK_ERR(cg_audit_json(NULL, &json), CG_INVALID_ARGUMENT, "manager is NULL");
    CHECK(json == NULL);
    CHECK_ERR(cg_audit_json(m, NULL), CG_INVALID_ARGUMENT, "json_out is NULL");
    CHECK_ERR(cg_report_json(NULL, &json), CG_INVALID_ARGUMENT, "manager is NULL");
    CHECK_ERR(cg_report_json(m, NULL), CG_INVALID_ARGUMENT, "json_out is NULL");
    CHECK_ERR(cg_metrics_json(NULL, &json), CG_INVALID_ARGUMENT, "manager is NULL");
    CHECK_ERR(cg_metrics_json(m, NULL), CG_INVALID_ARGUMENT, "json_out is NULL");
    CHECK_ERR(cg_metrics_prometheus(NULL, &json), CG_INVALID_ARGUMENT, "manager is NULL");
    CHECK_ERR(cg_metrics_prometheus(m, NULL), CG_INVALID_ARGUMENT, "text_out is NULL");
    cg_string_free(secret);
    cg_close(m);
}

/* The seed's four scenarios, end to end (docs/reference.md). */
static void test_seed_scenarios(void) {
    cg_manager *m = open_temp();
    char *secret = NULL;
    cg_api_key key;
    CHECK_STATUS(cg_create_api_key(m, "pat", NULL, &secret, &key), CG_INSUFFICIENT_CREDITS);
    cg_entry e;
    CHECK_OK(cg_record_payment(m, "pat", "pi_seed", 500, "USD", &e));
    CHECK_OK(cg_create_api_key(m, "pat", NULL, &secret, &key));
    int64_t before = e.balance_after_micros;
    cg_verification v;
    cg_usage_charge c;
    int calls = 0;
    while (cg_verify_api_key_credits(m, secret, CG_MICROS_PER_CREDIT, &v) == CG_OK) {
        CHECK_OK(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 700000, .output_tokens = 300000}, NULL,
                 &c));
        CHECK_EQ_I64(c.balance_micros, before - CREDITS(1000));
        before = c.balance_micros;
        if (++calls > 10) break;
    }
    CHECK(calls == 5);
    CHECK_STATUS(cg_verify_api_key_credits(m, secret, CG_MICROS_PER_CREDIT, &v), CG_INSUFFICIENT_CREDITS);
    cg_string_free(secret);
    cg_close(m);
}

int main(void) {
    harness_env();
    memset(LONG_TEXT, 'x', 256);
    RUN(test_status_table);
    RUN(test_version_and_strings);
    RUN(test_last_error);
    RUN(test_open);
    RUN(test_open_env);
    RUN(test_backup);
    RUN(test_min_balance);
    RUN(test_balance_and_account);
    RUN(test_grants);
    RUN(test_add_credits);
    RUN(test_payments);
    RUN(test_currencies_and_reinstatement);
    RUN(test_deduct);
    RUN(test_transactions);
    RUN(test_limit_constants);
    RUN(test_rate_limits);
    RUN(test_events);
    RUN(test_key_creation_gate);
    RUN(test_key_limit);
    RUN(test_verify_and_revoke);
    RUN(test_key_policy);
    RUN(test_import);
    RUN(test_record_usage);
    RUN(test_holds);
    RUN(test_usage_holds);
    RUN(test_boundary_errors_are_counted);
    RUN(test_model_prices);
    RUN(test_audit_report_metrics);
    RUN(test_seed_scenarios);
    remove_temp_dbs();
    return harness_summary("test_api");
}
