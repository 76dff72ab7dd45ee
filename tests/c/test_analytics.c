/*
 * Pricing and usage analytics (issue 20) through the C API: prices with
 * every component (cache reads, cache writes, a request fee), a settle
 * after a price change charged at its reserve's price, usage summaries
 * parsed and checked against the charges made, statements reconciling
 * (opening + lines = closing) in JSON and CSV; and every new function's
 * NULL and invalid arguments with their documented status and reset
 * out-pointers.
 */
#include "harness.h"

#include <time.h>

static const char BAD_UTF8[] = "al\xff" "ice";

/* Where the prices set take effect (the out-pointer of cg_set_model_pricing). */
static int64_t effective;

/* Fills an out value with garbage before a call. */
#define GARBAGE(x) memset(&(x), 0xA5, sizeof(x))

/* Now, in microseconds since the epoch (the ledger's clock). */
static int64_t now_micros(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The integer after `"name":` in `s` (the first one), or INT64_MIN when
 * there is none or it is not a number. */
static int64_t field(const char *s, const char *name) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":", name);
    const char *p = s ? strstr(s, pattern) : NULL;
    if (p == NULL) return INT64_MIN;
    p += strlen(pattern);
    char *end = NULL;
    long long v = strtoll(p, &end, 10);
    return end == p ? INT64_MIN : (int64_t)v;
}

/* The row objects of a flat JSON array of flat objects ("[{...},{...}]"),
 * split in place: `rows[i]` points at the i-th object's text. */
static int split_rows(char *json, char **rows, int max) {
    int n = 0;
    for (char *p = strchr(json, '{'); p != NULL && n < max; p = strchr(p + 1, '{')) {
        rows[n++] = p;
        char *end = strchr(p, '}');
        if (end == NULL) break;
        *end = '\0';
        p = end;
    }
    return n;
}

/* `s` starts with `prefix`. */
static int starts_with(const char *s, const char *prefix) { return s && strncmp(s, prefix, strlen(prefix)) == 0; }

/* Lines of a string (its '\n's). */
static int lines_of(const char *s) { return count_of(s, "\n"); }

/* alice pays $10 and creates a key; returns its secret. */
static char *paying_user(cg_manager *m, const char *user, cg_api_key *key) {
    cg_entry e;
    char pid[64];
    snprintf(pid, sizeof pid, "pi_%s", user);
    CHECK_OK(cg_record_payment(m, user, pid, 1000, "USD", &e));
    char *secret = NULL;
    CHECK_OK(cg_create_api_key(m, user, "main", &secret, key));
    return secret;
}

static void test_prices_with_every_component(void) {
    cg_manager *m = open_temp();
    cg_api_key key;
    char *secret = paying_user(m, "alice", &key);
    const cg_model_price gpt = {.input_per_1k_micros = 2000000,
                                .output_per_1k_micros = 4000000,
                                .has_cached_input_per_1k = true,
                                .cached_input_per_1k_micros = 500000,
                                .has_cache_write_per_1k = true,
                                .cache_write_per_1k_micros = 2500000,
                                .request_fee_micros = 1000};
    int64_t before = now_micros(), at = -1;
    CHECK_OK(cg_set_model_pricing(m, "gpt", &gpt, 0, &at));
    CHECK(at >= before && at <= now_micros()); /* 0: now */
    CHECK_OK(cg_set_model_pricing(m, "plain", &(cg_model_price){.input_per_1k_micros = 1000}, 0, &effective));

    /* 1000 prompt tokens: 400 read from the cache, 100 written to it, 500
     * neither; 500 output. (500*2 + 400*0.5 + 100*2.5 + 500*4) credits per
     * 1k = 3.45 credits, plus the fee. */
    cg_usage_charge c;
    cg_usage u = {.input_tokens = 1000, .output_tokens = 500, .model = "gpt", .cached_input_tokens = 400,
                  .cache_write_tokens = 100};
    CHECK_OK(cg_record_usage(m, secret, NULL, &u, "r1", &c));
    CHECK_EQ_I64(c.charged_micros, 3450000 + 1000);
    CHECK_EQ_I64(c.tokens, 1500);
    /* The same request id with other cache counts is another usage. */
    u.cached_input_tokens = 300;
    CHECK_ERR(cg_record_usage(m, secret, NULL, &u, "r1", &c), CG_IDEMPOTENCY_CONFLICT, "r1");
    u.cached_input_tokens = 400;
    CHECK_OK(cg_record_usage(m, secret, NULL, &u, "r1", &c));
    CHECK(c.replayed);
    CHECK_EQ_I64(c.charged_micros, 3451000);
    /* One rounding, up: a single token at 1 micro-credit per 1k costs 1. */
    CHECK_OK(cg_set_model_pricing(m, "tiny", &(cg_model_price){.input_per_1k_micros = 1}, 0, &effective));
    CHECK_OK(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 1, .model = "tiny"}, NULL, &c));
    CHECK_EQ_I64(c.charged_micros, 1);
    /* A model without cache prices charges cache tokens at its input price. */
    CHECK_OK(cg_record_usage(m, secret, NULL,
                             &(cg_usage){.input_tokens = 1000, .model = "plain", .cached_input_tokens = 600,
                                         .cache_write_tokens = 400},
                             NULL, &c));
    CHECK_EQ_I64(c.charged_micros, 1000);
    /* Free cache reads are a price (0 with its flag), not "none". */
    CHECK_OK(cg_set_model_pricing(m, "free-cache",
                                  &(cg_model_price){.input_per_1k_micros = 1000, .has_cached_input_per_1k = true},
                                  0, &effective));
    CHECK_OK(cg_record_usage(m, secret, NULL,
                             &(cg_usage){.input_tokens = 1000, .model = "free-cache", .cached_input_tokens = 1000},
                             NULL, &c));
    CHECK_EQ_I64(c.charged_micros, 0);
    /* The cache counts are part of the prompt. */
    CHECK_ERR(cg_record_usage(m, secret, NULL,
                              &(cg_usage){.input_tokens = 10, .model = "gpt", .cached_input_tokens = 6,
                                          .cache_write_tokens = 5},
                              NULL, &c),
              CG_INVALID_ARGUMENT, "must not exceed input_tokens");
    CHECK_ERR(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 10, .cached_input_tokens = -1}, NULL, &c),
              CG_INVALID_ARGUMENT, "cached_input_tokens");
    CHECK_ERR(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 10, .cache_write_tokens = -1}, NULL, &c),
              CG_INVALID_ARGUMENT, "cache_write_tokens");

    /* Each usage entry records its cache counts and the rates it was charged at. */
    char *json = NULL;
    CHECK_OK(cg_transactions_json(m, "alice", 0, NULL, &json));
    CHECK_CONTAINS(json, "\"cached_input_tokens\":400");
    CHECK_CONTAINS(json, "\"cache_write_tokens\":100");
    CHECK_CONTAINS(json, "\"price\":{\"cache_write_per_1k_micros\":2500000,\"cached_input_per_1k_micros\":500000,"
                         "\"input_per_1k_micros\":2000000,\"output_per_1k_micros\":4000000,"
                         "\"request_fee_micros\":1000}");
    CHECK_CONTAINS(json, "\"cache_write_per_1k_micros\":null,\"cached_input_per_1k_micros\":null,"
                         "\"input_per_1k_micros\":1000");
    CHECK(count_of(json, "\"price\":null") == 1); /* the purchase */
    cg_string_free(json);
    CHECK_OK(cg_list_model_prices_json(m, &json));
    CHECK_CONTAINS(json, "\"gpt\":{\"cache_write_per_1k_micros\":2500000,\"cached_input_per_1k_micros\":500000,"
                         "\"input_per_1k_micros\":2000000,\"output_per_1k_micros\":4000000,"
                         "\"request_fee_micros\":1000}");
    CHECK_CONTAINS(json, "\"free-cache\":{\"cache_write_per_1k_micros\":null,\"cached_input_per_1k_micros\":0,");
    cg_string_free(json);

    /* A version set for later: listed in the history, not in effect yet. */
    int64_t later = now_micros() + (int64_t)3600 * 1000000;
    CHECK_OK(cg_set_model_pricing(m, "gpt", &(cg_model_price){.input_per_1k_micros = 9}, later, &at));
    CHECK_EQ_I64(at, later);
    CHECK_OK(cg_set_model_pricing(m, "gpt", &(cg_model_price){.input_per_1k_micros = 8}, later, &at)); /* replaces */
    CHECK_OK(cg_price_history_json(m, "gpt", &json));
    CHECK(count_of(json, "\"model\":\"gpt\"") == 2);
    CHECK(count_of(json, "\"effective_at\":") == 2 && count_of(json, "\"set_at\":") == 2);
    const char *first = strstr(json, "\"input_per_1k_micros\":2000000");
    const char *second = strstr(json, "\"input_per_1k_micros\":8,");
    CHECK(first != NULL && second != NULL && first < second); /* oldest first */
    CHECK(strstr(json, "\"input_per_1k_micros\":9,") == NULL);
    cg_string_free(json);
    CHECK_OK(cg_price_history_json(m, NULL, &json));
    CHECK(count_of(json, "\"model\":") == 5);
    cg_string_free(json);
    CHECK_OK(cg_price_history_json(m, "unpriced", &json));
    CHECK(strcmp(json, "[]") == 0);
    cg_string_free(json);
    CHECK_OK(cg_list_model_prices_json(m, &json));
    CHECK_CONTAINS(json, "\"input_per_1k_micros\":2000000"); /* still the one in effect */
    cg_string_free(json);

    /* Bad prices: refused, the history unchanged. */
    CHECK_ERR(cg_set_model_pricing(m, "gpt", &(cg_model_price){.input_per_1k_micros = -1}, 0, &effective),
              CG_INVALID_ARGUMENT, "input_per_1k");
    CHECK_ERR(cg_set_model_pricing(m, "gpt", &(cg_model_price){.request_fee_micros = -1}, 0, &effective),
              CG_INVALID_ARGUMENT, "request_fee");
    CHECK_ERR(cg_set_model_pricing(m, "gpt",
                                   &(cg_model_price){.has_cached_input_per_1k = true, .cached_input_per_1k_micros = -5},
                                   0, &effective),
              CG_INVALID_ARGUMENT, "cached_input_per_1k");
    CHECK_ERR(cg_set_model_pricing(m, "gpt", &(cg_model_price){.cached_input_per_1k_micros = 5}, 0, &effective),
              CG_INVALID_ARGUMENT, "has_cached_input_per_1k is false");
    CHECK_ERR(cg_set_model_pricing(m, "gpt", &(cg_model_price){.cache_write_per_1k_micros = 5}, 0, &effective),
              CG_INVALID_ARGUMENT, "has_cache_write_per_1k is false");
    at = 42;
    CHECK_ERR(cg_set_model_pricing(m, "gpt", &gpt, 1, &at), CG_INVALID_ARGUMENT, "in the past");
    CHECK_EQ_I64(at, 0);
    CHECK_ERR(cg_set_model_pricing(m, "gpt", &gpt, -1, &at), CG_INVALID_ARGUMENT, "in the past");
    CHECK_OK(cg_price_history_json(m, "gpt", &json));
    CHECK(count_of(json, "\"model\":\"gpt\"") == 2);
    cg_string_free(json);
    CHECK_OK(cg_audit_json(m, &json));
    CHECK_CONTAINS(json, "\"ok\":true");
    cg_string_free(json);
    cg_string_free(secret);
    cg_close(m);
}

/* A hold is settled at the price of its reserve, not at one set since. */
static void test_settle_after_a_price_change(void) {
    cg_manager *m = open_temp();
    cg_api_key key;
    char *secret = paying_user(m, "alice", &key);
    CHECK_OK(cg_set_model_pricing(m, "s",
                                  &(cg_model_price){.input_per_1k_micros = 1000000,
                                                    .output_per_1k_micros = 2000000,
                                                    .has_cache_write_per_1k = true,
                                                    .cache_write_per_1k_micros = 3000000,
                                                    .request_fee_micros = 7},
                                  0, &effective));
    /* The worst case: the prompt at the highest of its rates (cache write,
     * 3 credits per 1k) and the output at its own, plus the fee. */
    cg_hold h;
    CHECK_OK(cg_reserve_usage(m, secret, &(cg_usage){.input_tokens = 1000, .output_tokens = 1000, .model = "s"}, 0,
                              "h1", &h));
    CHECK_EQ_I64(h.amount_micros, 3000000 + 2000000 + 7);
    /* Cache counts do not change a hold's worst case. */
    cg_hold h2;
    CHECK_OK(cg_reserve(m, secret, 0,
                        &(cg_usage){.input_tokens = 1000, .output_tokens = 1000, .model = "s",
                                    .cached_input_tokens = 1000},
                        0, NULL, &h2));
    CHECK_EQ_I64(h2.amount_micros, h.amount_micros);
    CHECK_OK(cg_release(m, h2.hold_id));

    usleep(2000); /* the new version's effective time is strictly later */
    CHECK_OK(cg_set_model_pricing(m, "s",
                                  &(cg_model_price){.input_per_1k_micros = 10000000, .output_per_1k_micros = 20000000},
                                  0, &effective));
    cg_usage_charge c;
    cg_usage actual = {.input_tokens = 1000, .output_tokens = 500, .cache_write_tokens = 200};
    CHECK_OK(cg_settle(m, h.hold_id, 0, &actual, &c));
    /* At the reserve's rates: (800*1 + 200*3 + 500*2) / 1000 = 2.4 credits, plus the fee. */
    CHECK_EQ_I64(c.charged_micros, 2400000 + 7);
    CHECK_OK(cg_settle(m, h.hold_id, 0, &actual, &c)); /* replay */
    CHECK(c.replayed);
    CHECK_EQ_I64(c.charged_micros, 2400007);
    /* A charge now is at the new price. */
    CHECK_OK(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 1000, .output_tokens = 500, .model = "s"},
                             NULL, &c));
    CHECK_EQ_I64(c.charged_micros, 10000000 + 10000000);
    char *json = NULL;
    CHECK_OK(cg_transactions_json(m, "alice", 2, NULL, &json));
    CHECK_CONTAINS(json, "\"request_fee_micros\":7"); /* the settle, at its reserve's rates */
    CHECK_CONTAINS(json, "\"input_per_1k_micros\":10000000");
    cg_string_free(json);
    CHECK_OK(cg_audit_json(m, &json));
    CHECK_CONTAINS(json, "\"ok\":true");
    cg_string_free(json);
    cg_string_free(secret);
    cg_close(m);
}

struct sums {
    int64_t requests, input, output, cached, write, credits;
};

static void add(struct sums *s, const cg_usage *u, const cg_usage_charge *c) {
    s->requests++;
    s->input += u->input_tokens;
    s->output += u->output_tokens;
    s->cached += u->cached_input_tokens;
    s->write += u->cache_write_tokens;
    s->credits += c->charged_micros;
}

static void check_row(const char *row, const struct sums *want) {
    CHECK_EQ_I64(field(row, "requests"), want->requests);
    CHECK_EQ_I64(field(row, "input_tokens"), want->input);
    CHECK_EQ_I64(field(row, "output_tokens"), want->output);
    CHECK_EQ_I64(field(row, "cached_input_tokens"), want->cached);
    CHECK_EQ_I64(field(row, "cache_write_tokens"), want->write);
    CHECK_EQ_I64(field(row, "credits_micros"), want->credits);
}

static void test_usage_summary(void) {
    cg_manager *m = open_temp();
    cg_api_key ka, kb;
    char *alice = paying_user(m, "alice", &ka);
    char *bob = paying_user(m, "bob", &kb);
    CHECK_OK(cg_set_model_pricing(m, "a",
                                  &(cg_model_price){.input_per_1k_micros = 1500,
                                                    .output_per_1k_micros = 3000,
                                                    .has_cached_input_per_1k = true,
                                                    .cached_input_per_1k_micros = 300,
                                                    .request_fee_micros = 11},
                                  0, &effective));
    CHECK_OK(cg_set_model_price(m, "b", 2000, 5000));

    /* Charges of known sizes: all, alice's by model, alice's key, bob's. */
    struct sums all = {0}, alice_a = {0}, alice_b = {0}, bob_all = {0};
    for (int i = 0; i < 12; i++) {
        cg_usage u = {.input_tokens = 100 + i * 37, .output_tokens = 10 + i * 13, .model = i % 3 ? "a" : "b",
                      .cached_input_tokens = i * 5, .cache_write_tokens = i % 2 ? 3 : 0};
        const int is_bob = i % 4 == 3;
        cg_usage_charge c;
        CHECK_OK(cg_record_usage(m, is_bob ? bob : alice, NULL, &u, NULL, &c));
        add(&all, &u, &c);
        add(is_bob ? &bob_all : i % 3 ? &alice_a : &alice_b, &u, &c);
    }
    /* Something that is not usage does not count. */
    cg_entry e;
    CHECK_OK(cg_deduct_credits(m, "alice", CREDITS(1), NULL, &e));

    char *json = NULL, *rows[8];
    CHECK_OK(cg_usage_summary_json(m, NULL, &json)); /* NULL: totals */
    CHECK(split_rows(json, rows, 8) == 1);
    check_row(rows[0], &all);
    CHECK(strstr(rows[0], "\"model\"") == NULL); /* only grouped fields */
    cg_string_free(json);
    CHECK_OK(cg_usage_summary_json(m, &(cg_usage_query){0}, &json)); /* zeroed: the same */
    CHECK(split_rows(json, rows, 8) == 1);
    check_row(rows[0], &all);
    cg_string_free(json);

    CHECK_OK(cg_usage_summary_json(m, &(cg_usage_query){.user_id = "alice", .group_by = "model"}, &json));
    CHECK(split_rows(json, rows, 8) == 2);
    CHECK_CONTAINS(rows[0], "\"model\":\"a\""); /* ordered by the group */
    check_row(rows[0], &alice_a);
    CHECK_CONTAINS(rows[1], "\"model\":\"b\"");
    check_row(rows[1], &alice_b);
    cg_string_free(json);

    /* By key: bob's key is bob's usage. */
    CHECK_OK(cg_usage_summary_json(m, &(cg_usage_query){.key_id = kb.key_id, .group_by = " key "}, &json));
    CHECK(split_rows(json, rows, 8) == 1);
    CHECK_CONTAINS(rows[0], kb.key_id);
    check_row(rows[0], &bob_all);
    cg_string_free(json);

    /* By day and model: one day (today, UTC), two models. */
    CHECK_OK(cg_usage_summary_json(m, &(cg_usage_query){.model = "b", .group_by = "day,model"}, &json));
    char today[16];
    time_t t = time(NULL);
    strftime(today, sizeof today, "%Y-%m-%d", gmtime(&t));
    CHECK_CONTAINS(json, "\"day\":\"");
    CHECK(split_rows(json, rows, 8) == 1);
    CHECK(strstr(rows[0], "\"model\":\"b\"") != NULL && strstr(rows[0], "\"key\"") == NULL);
    cg_string_free(json);

    /* A range: everything is before a time from the future; nothing after it. */
    int64_t later = now_micros() + 60000000;
    CHECK_OK(cg_usage_summary_json(m, &(cg_usage_query){.until_micros = later}, &json));
    CHECK(split_rows(json, rows, 8) == 1);
    check_row(rows[0], &all);
    cg_string_free(json);
    CHECK_OK(cg_usage_summary_json(m, &(cg_usage_query){.since_micros = later, .group_by = "model"}, &json));
    CHECK(strcmp(json, "[]") == 0);
    cg_string_free(json);

    /* CSV: the grouped columns in the order given, then the counts. */
    char *csv = NULL;
    CHECK_OK(cg_usage_summary_csv(m, &(cg_usage_query){.user_id = "alice", .group_by = "model,day"}, &csv));
    CHECK(starts_with(csv, "model,day,requests,input_tokens,output_tokens,cached_input_tokens,cache_write_tokens,"
                           "credits\n"));
    CHECK(lines_of(csv) == 3);
    char want[128];
    snprintf(want, sizeof want, "\na,%s,%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 ",", today,
             alice_a.requests, alice_a.input, alice_a.output, alice_a.cached, alice_a.write);
    CHECK_CONTAINS(csv, want);
    cg_string_free(csv);
    CHECK_OK(cg_usage_summary_csv(m, NULL, &csv));
    CHECK(starts_with(csv, "requests,") && lines_of(csv) == 2);
    cg_string_free(csv);

    /* Unknown and repeated groups, an inverted range, a bad key id. */
    const cg_status inv = CG_INVALID_ARGUMENT;
    json = (char *)&t;
    CHECK_ERR(cg_usage_summary_json(m, &(cg_usage_query){.group_by = "day,region"}, &json), inv,
              "unknown group \"region\", expected one of day, model, key, member, project");
    CHECK(json == NULL);
    csv = (char *)&t;
    CHECK_ERR(cg_usage_summary_csv(m, &(cg_usage_query){.group_by = "Day"}, &csv), inv, "unknown group \"Day\"");
    CHECK(csv == NULL);
    CHECK_ERR(cg_usage_summary_json(m, &(cg_usage_query){.group_by = "day,,model"}, &json), inv, "unknown group \"\"");
    CHECK_ERR(cg_usage_summary_json(m, &(cg_usage_query){.group_by = "model,model"}, &json), inv, "twice");
    CHECK_ERR(cg_usage_summary_json(m, &(cg_usage_query){.since_micros = later, .until_micros = later - 1}, &json),
              inv, "inverted");
    CHECK_ERR(cg_usage_summary_csv(m, &(cg_usage_query){.since_micros = 2, .until_micros = 1}, &csv), inv,
              "inverted");
    CHECK_ERR(cg_usage_summary_json(m, &(cg_usage_query){.key_id = "not-a-uuid"}, &json), inv, "");
    CHECK(json == NULL);
    cg_string_free(alice);
    cg_string_free(bob);
    cg_close(m);
}

/* Sums the `amount_micros` of a statement's lines. */
static int64_t sum_of_lines(const char *json, int *n) {
    int64_t sum = 0;
    *n = 0;
    const char *lines = strstr(json, "\"lines\":[");
    for (const char *p = lines ? strstr(lines, "\"amount_micros\":") : NULL; p != NULL;
         p = strstr(p + 1, "\"amount_micros\":")) {
        sum += field(p, "amount_micros");
        (*n)++;
    }
    return sum;
}

/* The last comma-separated cell of the line that starts with `row`. */
static double last_cell(const char *csv, const char *row) {
    const char *p = strstr(csv, row);
    if (p == NULL) return -1e300;
    const char *eol = strchr(p + 1, '\n');
    const char *comma = p;
    for (const char *q = p; q < eol; q++)
        if (*q == ',') comma = q;
    return strtod(comma + 1, NULL);
}

static void test_statement_reconciles(void) {
    cg_manager *m = open_temp();
    cg_api_key key;
    char *secret = paying_user(m, "alice", &key); /* a purchase */
    CHECK_OK(cg_set_model_pricing(m, "a",
                                  &(cg_model_price){.input_per_1k_micros = 1234,
                                                    .output_per_1k_micros = 5678,
                                                    .has_cache_write_per_1k = true,
                                                    .cache_write_per_1k_micros = 999,
                                                    .request_fee_micros = 3},
                                  0, &effective));
    cg_entry e;
    cg_usage_charge c;
    CHECK_OK(cg_add_credits(m, "alice", CREDITS(5), NULL, NULL, &e)); /* a grant */
    CHECK_OK(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 700, .output_tokens = 9, .model = "a"}, NULL,
                             &c));
    int64_t balance_mid = -1;
    CHECK_OK(cg_balance(m, "alice", &balance_mid));
    usleep(2000);
    int64_t mid = now_micros();
    usleep(2000);
    CHECK_OK(cg_record_usage(m, secret, NULL,
                             &(cg_usage){.input_tokens = 900, .output_tokens = 90, .model = "a",
                                         .cache_write_tokens = 300},
                             NULL, &c));
    CHECK_OK(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 50}, NULL, &c)); /* the default price */
    CHECK_OK(cg_deduct_credits(m, "alice", CREDITS(2), NULL, &e));
    int64_t balance = -1;
    CHECK_OK(cg_balance(m, "alice", &balance));
    int64_t until = now_micros() + 60000000;

    /* Everything: opens at 0, closes at the balance, the lines in between. */
    char *json = NULL;
    CHECK_OK(cg_statement_json(m, "alice", 0, until, &json));
    CHECK_CONTAINS(json, "\"user_id\":\"alice\"");
    CHECK_CONTAINS(json, "\"since\":\"1970-01-01T00:00:00");
    CHECK_EQ_I64(field(json, "opening_balance_micros"), 0);
    CHECK_EQ_I64(field(json, "closing_balance_micros"), balance);
    int n = 0;
    CHECK_EQ_I64(sum_of_lines(json, &n), balance);
    CHECK(n == 5); /* purchase, grant, usage of "a", usage at the default price, deduct */
    CHECK(count_of(json, "\"kind\":\"usage\"") == 2);
    CHECK_CONTAINS(json, "\"model\":\"a\",\"output_tokens\":99,\"price\":{\"cache_write_per_1k_micros\":999,");
    CHECK(count_of(json, "\"entries\":2") == 1);
    CHECK_CONTAINS(json, "\"cache_write_tokens\":300");
    cg_string_free(json);

    /* From the middle: opens at the balance then. */
    CHECK_OK(cg_statement_json(m, "alice", mid, until, &json));
    CHECK_EQ_I64(field(json, "opening_balance_micros"), balance_mid);
    CHECK_EQ_I64(field(json, "closing_balance_micros"), balance);
    CHECK_EQ_I64(field(json, "opening_balance_micros") + sum_of_lines(json, &n), balance);
    CHECK(n == 3);
    CHECK(strstr(json, "\"kind\":\"purchase\"") == NULL);
    cg_string_free(json);
    /* Up to the middle: closes at the balance then. */
    CHECK_OK(cg_statement_json(m, "alice", 0, mid, &json));
    CHECK_EQ_I64(field(json, "closing_balance_micros"), balance_mid);
    CHECK_EQ_I64(sum_of_lines(json, &n), balance_mid);
    cg_string_free(json);
    /* An empty range, and an account with no entries. */
    CHECK_OK(cg_statement_json(m, "alice", mid, mid, &json));
    CHECK_CONTAINS(json, "\"lines\":[]");
    CHECK_EQ_I64(field(json, "opening_balance_micros"), balance_mid);
    CHECK_EQ_I64(field(json, "closing_balance_micros"), balance_mid);
    cg_string_free(json);
    CHECK_OK(cg_statement_json(m, "nobody", 0, until, &json));
    CHECK_CONTAINS(json, "\"lines\":[]");
    CHECK_EQ_I64(field(json, "closing_balance_micros"), 0);
    cg_string_free(json);

    /* CSV: header, opening, one row per line, closing; credits in decimal. */
    char *csv = NULL;
    CHECK_OK(cg_statement_csv(m, "alice", 0, until, &csv));
    CHECK(starts_with(csv, "kind,model,input_per_1k,output_per_1k,cached_input_per_1k,cache_write_per_1k,request_fee,"
                           "entries,input_tokens,output_tokens,cached_input_tokens,cache_write_tokens,amount\n"));
    CHECK(lines_of(csv) == 1 + 1 + 5 + 1);
    CHECK_CONTAINS(csv, "\nopening,");
    CHECK_CONTAINS(csv, "\nusage,a,0.001234,0.005678,,0.000999,0.000003,2,1600,99,0,300,");
    CHECK(last_cell(csv, "\nopening,") == 0.0);
    CHECK(last_cell(csv, "\nclosing,") * 1e6 > (double)balance - 0.5 &&
          last_cell(csv, "\nclosing,") * 1e6 < (double)balance + 0.5);
    cg_string_free(csv);

    /* An inverted range. */
    const cg_status inv = CG_INVALID_ARGUMENT;
    json = (char *)&n;
    CHECK_ERR(cg_statement_json(m, "alice", until, mid, &json), inv, "inverted");
    CHECK(json == NULL);
    csv = (char *)&n;
    CHECK_ERR(cg_statement_csv(m, "alice", 1, 0, &csv), inv, "inverted");
    CHECK(csv == NULL);
    cg_string_free(secret);
    cg_close(m);
}

/* NULL and invalid UTF-8 for every pointer argument of the new functions;
 * each out-pointer reset on failure; the ledger's prices unchanged. */
static void test_bad_arguments(void) {
    cg_manager *m = open_temp();
    const cg_status inv = CG_INVALID_ARGUMENT;
    const cg_model_price p = {.input_per_1k_micros = 1};
    char *s;
    int64_t at;

    at = 42;
    CHECK_ERR(cg_set_model_pricing(NULL, "x", &p, 0, &at), inv, "manager is NULL");
    CHECK_EQ_I64(at, 0);
    CHECK_ERR(cg_set_model_pricing(m, NULL, &p, 0, &at), inv, "model is NULL");
    CHECK_ERR(cg_set_model_pricing(m, BAD_UTF8, &p, 0, &at), inv, "model is not valid UTF-8");
    CHECK_ERR(cg_set_model_pricing(m, "", &p, 0, &at), inv, "model");
    CHECK_ERR(cg_set_model_pricing(m, "x", NULL, 0, &at), inv, "price is NULL");
    CHECK_EQ_I64(at, 0);
    CHECK_ERR(cg_set_model_pricing(m, "x", &p, 0, NULL), inv, "effective_at_micros_out is NULL");

    s = (char *)&at;
    CHECK_ERR(cg_price_history_json(NULL, NULL, &s), inv, "manager is NULL");
    CHECK(s == NULL);
    CHECK_ERR(cg_price_history_json(m, NULL, NULL), inv, "json_out is NULL");
    s = (char *)&at;
    CHECK_ERR(cg_price_history_json(m, BAD_UTF8, &s), inv, "model is not valid UTF-8");
    CHECK(s == NULL);

    cg_status (*summary[2])(const cg_manager *, const cg_usage_query *, char **) = {cg_usage_summary_json,
                                                                                    cg_usage_summary_csv};
    for (int i = 0; i < 2; i++) {
        s = (char *)&at;
        CHECK_ERR(summary[i](NULL, NULL, &s), inv, "manager is NULL");
        CHECK(s == NULL);
        CHECK_ERR(summary[i](m, NULL, NULL), inv, "_out is NULL");
        s = (char *)&at;
        CHECK_ERR(summary[i](m, &(cg_usage_query){.user_id = BAD_UTF8}, &s), inv, "user_id is not valid UTF-8");
        CHECK(s == NULL);
        CHECK_ERR(summary[i](m, &(cg_usage_query){.key_id = BAD_UTF8}, &s), inv, "key_id is not valid UTF-8");
        CHECK_ERR(summary[i](m, &(cg_usage_query){.model = BAD_UTF8}, &s), inv, "model is not valid UTF-8");
        CHECK_ERR(summary[i](m, &(cg_usage_query){.group_by = BAD_UTF8}, &s), inv, "group_by is not valid UTF-8");
        CHECK_ERR(summary[i](m, &(cg_usage_query){.user_id = ""}, &s), inv, "user_id");
        CHECK(s == NULL);
        CHECK_OK(summary[i](m, &(cg_usage_query){.group_by = ""}, &s)); /* "": no groups */
        CHECK(s != NULL);
        cg_string_free(s);
    }

    cg_status (*statement[2])(const cg_manager *, const char *, int64_t, int64_t, char **) = {cg_statement_json,
                                                                                              cg_statement_csv};
    for (int i = 0; i < 2; i++) {
        s = (char *)&at;
        CHECK_ERR(statement[i](NULL, "alice", 0, 1, &s), inv, "manager is NULL");
        CHECK(s == NULL);
        CHECK_ERR(statement[i](m, "alice", 0, 1, NULL), inv, "_out is NULL");
        s = (char *)&at;
        CHECK_ERR(statement[i](m, NULL, 0, 1, &s), inv, "user_id is NULL");
        CHECK(s == NULL);
        CHECK_ERR(statement[i](m, BAD_UTF8, 0, 1, &s), inv, "user_id is not valid UTF-8");
        CHECK_ERR(statement[i](m, "", 0, 1, &s), inv, "user_id");
        CHECK(s == NULL);
    }

    /* cg_usage's strings (model) and counts reach record_usage, reserve and settle. */
    cg_usage_charge c;
    cg_hold h;
    GARBAGE(c);
    CHECK_ERR(cg_record_usage(m, "sk_unknown", NULL,
                              &(cg_usage){.input_tokens = 1, .model = BAD_UTF8, .cached_input_tokens = 1}, NULL, &c),
              inv, "model is not valid UTF-8");
    GARBAGE(h);
    CHECK_ERR(cg_reserve_usage(m, "sk_unknown", &(cg_usage){.input_tokens = 1, .model = BAD_UTF8}, 0, NULL, &h), inv,
              "model is not valid UTF-8");

    s = NULL;
    CHECK_OK(cg_price_history_json(m, NULL, &s));
    CHECK(s != NULL && strcmp(s, "[]") == 0); /* nothing was set */
    cg_string_free(s);
    CHECK(CG_MAX_SUMMARY_ROWS == 100000 && CG_MAX_PRICE_VERSIONS == 1000);
    cg_close(m);
}

int main(void) {
    harness_env();
    RUN(test_prices_with_every_component);
    RUN(test_settle_after_a_price_change);
    RUN(test_usage_summary);
    RUN(test_statement_reconciles);
    RUN(test_bad_arguments);
    remove_temp_dbs();
    return harness_summary("test_analytics");
}
