/*
 * Issue 7, "hostile input loses nothing" (C front door): every function of
 * include/creditgate.h fed NULL for each pointer, invalid UTF-8, empty,
 * 256-byte and 1 MiB strings, out-of-range int64 amounts, token counts,
 * ttls and page limits, malformed and unknown ids, bad metadata JSON. Each
 * call returns its documented status (docs/reference.md), zeroes its out-pointer
 * (NULL strings, zeroed structs, 0 balances), and the ledger is unchanged
 * afterwards (balances, accounts, entries, keys, prices, audit and report
 * JSON compared before and after); the organisation and allowance functions
 * get theirs in test_orgs.c. NUL inside a C string cannot be passed
 * (it ends the string) and the C API takes no doubles (no NaN/inf to try).
 */
#include "harness.h"

#define MIB (1 << 20)
#define MAX_AMOUNT_MICROS ((int64_t)1000000000000 * CG_MICROS_PER_CREDIT)
#define MAX_TOKENS ((int64_t)1000000000)

static const char BAD_UTF8[] = "al\xff" "ice";
static const char OVERLONG_UTF8[] = "\xc0\xafx";     /* overlong '/' */
static const char SURROGATE_UTF8[] = "\xed\xa0\x80x"; /* U+D800 */
static char TEXT_256[257];                           /* one byte over the 255-byte limit */
static char *BIG;                                    /* 1 MiB of 'x' */
static char *BIG_JSON;                               /* a 1 MiB JSON object */
static char META_4097[5000];                         /* a JSON object of 4097 bytes */
static char META_70K[70 * 1024];                     /* over the 64 KiB text limit */

static int inputs;

/* One bad input: counts it and checks its status. */
#define BAD(call, want)                                                                                  \
    do {                                                                                                 \
        inputs++;                                                                                        \
        CHECK_STATUS(call, want);                                                                        \
    } while (0)

/* Fills an out value with garbage before a call. */
#define GARBAGE(x) memset(&(x), 0xA5, sizeof(x))

static int is_zero(const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != 0) return 0;
    return 1;
}

/* A failed call zeroed its struct out-pointer. */
#define CHECK_ZEROED(x) CHECK(is_zero(&(x), sizeof(x)))

/* ----- the bad strings --------------------------------------------------- */

enum { V_NULL, V_UTF8, V_OVERLONG, V_SURROGATE, V_EMPTY, V_256, V_BIG, NV };
static const char *variant(int v) {
    switch (v) {
    case V_NULL: return NULL;
    case V_UTF8: return BAD_UTF8;
    case V_OVERLONG: return OVERLONG_UTF8;
    case V_SURROGATE: return SURROGATE_UTF8;
    case V_EMPTY: return "";
    case V_256: return TEXT_256;
    default: return BIG;
    }
}

/* What an API key argument answers: not a string -> invalid argument; a
 * string that cannot be a key -> invalid API key. */
static cg_status want_key(int v) {
    return v == V_NULL || v == V_UTF8 || v == V_OVERLONG || v == V_SURROGATE ? CG_INVALID_ARGUMENT
                                                                              : CG_INVALID_API_KEY;
}

/* ----- snapshots ------------------------------------------------------------ */

struct buf {
    char *s;
    size_t len, cap;
};

static void append(struct buf *b, const char *s) {
    size_t n = strlen(s);
    if (b->len + n + 2 > b->cap) {
        b->cap = (b->len + n + 2) * 2;
        b->s = realloc(b->s, b->cap);
        if (b->s == NULL) exit(2);
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len++] = '\n';
    b->s[b->len] = '\0';
}

/* Appends the JSON a call returns through `&json`, then frees it. */
#define APPEND_JSON(b, call)                                                                             \
    do {                                                                                                 \
        char *json = NULL;                                                                               \
        CHECK_OK(call);                                                                                  \
        append(b, json ? json : "(null)");                                                               \
        cg_string_free(json);                                                                            \
    } while (0)

/* Everything a bad input must not change. Metrics may change. */
static char *snapshot(cg_manager *m) {
    struct buf b = {0};
    const char *users[] = {"alice", "bob", "nobody"};
    for (size_t i = 0; i < sizeof users / sizeof *users; i++) {
        int64_t balance = -1;
        char line[64];
        CHECK_OK(cg_balance(m, users[i], &balance));
        snprintf(line, sizeof line, "balance %" PRId64, balance);
        append(&b, line);
        APPEND_JSON(&b, cg_account_json(m, users[i], &json));
        APPEND_JSON(&b, cg_transactions_json(m, users[i], 1000, NULL, &json));
        APPEND_JSON(&b, cg_list_api_keys_json(m, users[i], &json));
    }
    APPEND_JSON(&b, cg_audit_json(m, &json));
    CHECK(count_of(b.s, "\"ok\":true") == 1);
    APPEND_JSON(&b, cg_report_json(m, &json));
    APPEND_JSON(&b, cg_list_model_prices_json(m, &json));
    CHECK(count_of(b.s, "(null)") == 0);
    return b.s;
}

/* ----- the matrix ------------------------------------------------------------- */

static cg_manager *m;
static char *secret;     /* alice's key */
static char key_id[CG_ID_SIZE];
static char hold_id[CG_ID_SIZE];
static char entry_id[CG_ID_SIZE]; /* alice's newest entry */
static char unknown_ids[4][CG_ID_SIZE];

static void setup(void) {
    m = open_temp();
    cg_entry e;
    cg_api_key k;
    cg_hold h;
    cg_usage_charge c;
    CHECK_OK(cg_record_payment(m, "alice", "pi_1", 1000, "USD", &e));
    CHECK_OK(cg_create_api_key(m, "alice", "main", &secret, &k));
    memcpy(key_id, k.key_id, CG_ID_SIZE);
    CHECK_OK(cg_import_api_key(m, "bob", "legacy-key-of-bob-0001", NULL, NULL, &k));
    CHECK_OK(cg_set_model_price(m, "gpt", CREDITS(2), CREDITS(4)));
    CHECK_OK(cg_set_model_price(m, "max", MAX_AMOUNT_MICROS, MAX_AMOUNT_MICROS));
    CHECK_OK(cg_reserve(m, secret, CREDITS(5), NULL, 600, "h1", &h));
    memcpy(hold_id, h.hold_id, CG_ID_SIZE);
    CHECK_OK(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 1000}, "r1", &c));
    CHECK_OK(cg_deduct_credits(m, "alice", CREDITS(1), &(cg_entry_options){.idempotency_key = "d1"}, &e));
    memcpy(entry_id, e.id, CG_ID_SIZE);
    /* Well-formed UUIDs the ledger never issued. */
    srand((unsigned)getpid());
    for (int i = 0; i < 4; i++) {
        snprintf(unknown_ids[i], CG_ID_SIZE, "%08x-%04x-7%03x-%04x-%08x%04x", (unsigned)rand(),
                 (unsigned)rand() & 0xffff, (unsigned)rand() & 0xfff, 0x8000 | ((unsigned)rand() & 0x3fff),
                 (unsigned)rand(), (unsigned)rand() & 0xffff);
    }
    snprintf(unknown_ids[0], CG_ID_SIZE, "00000000-0000-0000-0000-000000000000");
}

/* NULL for every pointer argument: the handle, each required string, each
 * out-pointer. */
static void test_null_pointers(void) {
    cg_entry e;
    cg_key_eligibility el;
    cg_api_key k;
    cg_verification v;
    cg_usage_charge c;
    cg_hold h;
    char *s;
    int64_t bal;
    cg_manager *out_m;
    const cg_status inv = CG_INVALID_ARGUMENT;

    /* No handle. */
    out_m = (cg_manager *)&bal;
    BAD(cg_open("sqlite:///:memory:", NULL), inv);
    BAD(cg_open(BAD_UTF8, &out_m), inv);
    CHECK(out_m == NULL);
    BAD(cg_open_env(NULL), inv);
    s = (char *)&bal;
    BAD(cg_database_url(NULL, &s), inv);
    CHECK(s == NULL);
    BAD(cg_database_url(m, NULL), inv);
    BAD(cg_migrate(NULL), inv);
    bal = 42;
    BAD(cg_balance(NULL, "alice", &bal), inv);
    CHECK_EQ_I64(bal, 0);
    BAD(cg_balance(m, "alice", NULL), inv);
    s = (char *)&bal;
    BAD(cg_account_json(NULL, "alice", &s), inv);
    CHECK(s == NULL);
    BAD(cg_account_json(m, "alice", NULL), inv);
    GARBAGE(e);
    BAD(cg_add_credits(NULL, "alice", CREDITS(1), NULL, NULL, &e), inv);
    CHECK_ZEROED(e);
    BAD(cg_add_credits(m, "alice", CREDITS(1), NULL, NULL, NULL), inv);
    GARBAGE(e);
    BAD(cg_record_payment(NULL, "alice", "pi_2", 100, NULL, &e), inv);
    CHECK_ZEROED(e);
    BAD(cg_record_payment(m, "alice", "pi_2", 100, NULL, NULL), inv);
    BAD(cg_reverse_payment(NULL, "pi_1", 0, NULL, NULL, &e), inv);
    BAD(cg_reverse_payment(m, "pi_1", 0, NULL, NULL, NULL), inv);
    BAD(cg_deduct_credits(NULL, "alice", 1, NULL, &e), inv);
    BAD(cg_deduct_credits(m, "alice", 1, NULL, NULL), inv);
    s = (char *)&bal;
    BAD(cg_transactions_json(NULL, "alice", 10, NULL, &s), inv);
    CHECK(s == NULL);
    BAD(cg_transactions_json(m, "alice", 10, NULL, NULL), inv);
    GARBAGE(el);
    BAD(cg_can_generate_api_key(NULL, "alice", &el), inv);
    CHECK_ZEROED(el);
    BAD(cg_can_generate_api_key(m, "alice", NULL), inv);
    s = (char *)&bal;
    GARBAGE(k);
    BAD(cg_create_api_key(NULL, "alice", NULL, &s, &k), inv);
    CHECK(s == NULL);
    CHECK_ZEROED(k);
    BAD(cg_create_api_key(m, "alice", NULL, NULL, &k), inv);
    s = (char *)&bal;
    BAD(cg_create_api_key(m, "alice", NULL, &s, NULL), inv);
    CHECK(s == NULL);
    BAD(cg_import_api_key(NULL, "alice", "legacy-key-new-0001", NULL, NULL, &k), inv);
    BAD(cg_import_api_key(m, "alice", "legacy-key-new-0001", NULL, NULL, NULL), inv);
    BAD(cg_revoke_api_key(NULL, key_id, NULL), inv);
    BAD(cg_list_api_keys_json(NULL, "alice", &s), inv);
    BAD(cg_list_api_keys_json(m, "alice", NULL), inv);
    GARBAGE(v);
    BAD(cg_verify_api_key_credits(NULL, secret, 0, &v), inv);
    CHECK_ZEROED(v);
    BAD(cg_verify_api_key_credits(m, secret, 0, NULL), inv);
    GARBAGE(c);
    BAD(cg_record_usage(NULL, secret, NULL, &(cg_usage){.input_tokens = 1}, NULL, &c), inv);
    CHECK_ZEROED(c);
    BAD(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 1}, NULL, NULL), inv);
    GARBAGE(c);
    BAD(cg_record_usage(m, secret, NULL, NULL, NULL, &c), inv); /* the usage is required */
    CHECK_ZEROED(c);
    GARBAGE(h);
    BAD(cg_reserve_usage(m, secret, NULL, 60, NULL, &h), inv);
    CHECK_ZEROED(h);
    BAD(cg_reserve(m, secret, 0, NULL, 60, NULL, &h), inv); /* neither credits nor a usage */
    BAD(cg_settle(m, hold_id, 0, NULL, &c), inv);
    GARBAGE(h);
    BAD(cg_reserve(NULL, secret, CREDITS(1), NULL, 60, NULL, &h), inv);
    CHECK_ZEROED(h);
    BAD(cg_reserve(m, secret, CREDITS(1), NULL, 60, NULL, NULL), inv);
    BAD(cg_settle(NULL, hold_id, CREDITS(1), NULL, &c), inv);
    BAD(cg_settle(m, hold_id, CREDITS(1), NULL, NULL), inv);
    BAD(cg_release(NULL, hold_id), inv);
    BAD(cg_set_model_price(NULL, "gpt", 1, 1), inv);
    s = (char *)&bal;
    BAD(cg_list_model_prices_json(NULL, &s), inv);
    CHECK(s == NULL);
    BAD(cg_list_model_prices_json(m, NULL), inv);
    BAD(cg_audit_json(NULL, &s), inv);
    BAD(cg_audit_json(m, NULL), inv);
    BAD(cg_report_json(NULL, &s), inv);
    BAD(cg_report_json(m, NULL), inv);
    BAD(cg_metrics_json(NULL, &s), inv);
    BAD(cg_metrics_json(m, NULL), inv);
    BAD(cg_metrics_prometheus(NULL, &s), inv);
    BAD(cg_metrics_prometheus(m, NULL), inv);
    CHECK(s == NULL);
    CHECK_CONTAINS(cg_last_error(), "NULL");
}

/* Each string argument: NULL where it is required, invalid UTF-8 (three
 * kinds), empty, 256 bytes, 1 MiB. */
static void test_bad_strings(void) {
    const cg_status inv = CG_INVALID_ARGUMENT;
    for (int v = 0; v < NV; v++) {
        const char *x = variant(v);
        cg_entry e;
        cg_key_eligibility el;
        cg_api_key k;
        cg_verification ver;
        cg_usage_charge c;
        cg_hold h;
        char *s;
        int64_t bal;
        const int opt = v != V_NULL; /* NULL is "not given" for optional strings */

        bal = 42;
        BAD(cg_balance(m, x, &bal), inv);
        CHECK_EQ_I64(bal, 0);
        s = (char *)&bal;
        BAD(cg_account_json(m, x, &s), inv);
        CHECK(s == NULL);
        GARBAGE(e);
        BAD(cg_add_credits(m, x, CREDITS(1), NULL, NULL, &e), inv);
        CHECK_ZEROED(e);
        if (opt) {
            BAD(cg_add_credits(m, "alice", CREDITS(1), x, NULL, &e), inv);
            BAD(cg_add_credits(m, "alice", CREDITS(1), NULL, &(cg_entry_options){.idempotency_key = x}, &e), inv);
            BAD(cg_add_credits(m, "alice", CREDITS(1), NULL, &(cg_entry_options){.reference = x}, &e), inv);
            BAD(cg_add_credits(m, "alice", CREDITS(1), NULL, &(cg_entry_options){.metadata_json = x}, &e), inv);
            BAD(cg_deduct_credits(m, "alice", 1, &(cg_entry_options){.idempotency_key = x}, &e), inv);
            BAD(cg_deduct_credits(m, "alice", 1, &(cg_entry_options){.reference = x}, &e), inv);
            BAD(cg_deduct_credits(m, "alice", 1, &(cg_entry_options){.metadata_json = x}, &e), inv);
            BAD(cg_record_payment(m, "alice", "pi_2", 100, x, &e), inv);
            BAD(cg_reverse_payment(m, "pi_1", 0, x, NULL, &e), inv);
            BAD(cg_reverse_payment(m, "pi_1", 0, NULL, x, &e), inv);
            CHECK_ZEROED(e);
        }
        BAD(cg_deduct_credits(m, x, 1, NULL, &e), inv);
        BAD(cg_record_payment(m, x, "pi_2", 100, NULL, &e), inv);
        BAD(cg_record_payment(m, "alice", x, 100, NULL, &e), inv);
        BAD(cg_reverse_payment(m, x, 0, NULL, NULL, &e), inv);
        CHECK_ZEROED(e);
        s = (char *)&bal;
        BAD(cg_transactions_json(m, x, 10, NULL, &s), inv);
        if (opt) BAD(cg_transactions_json(m, "alice", 10, x, &s), inv);
        CHECK(s == NULL);
        GARBAGE(el);
        BAD(cg_can_generate_api_key(m, x, &el), inv);
        CHECK_ZEROED(el);
        s = (char *)&bal;
        GARBAGE(k);
        BAD(cg_create_api_key(m, x, NULL, &s, &k), inv);
        if (opt) BAD(cg_create_api_key(m, "alice", x, &s, &k), inv);
        CHECK(s == NULL);
        CHECK_ZEROED(k);
        BAD(cg_import_api_key(m, x, "legacy-key-new-0001", NULL, NULL, &k), inv);
        if (opt) {
            BAD(cg_import_api_key(m, "alice", NULL, x, NULL, &k), inv);
            BAD(cg_import_api_key(m, "alice", "legacy-key-new-0001", NULL, x, &k), inv);
            if (v != V_256) BAD(cg_import_api_key(m, "alice", x, NULL, NULL, &k),
                inv); /* 256 bytes is a fine legacy key */
            BAD(cg_revoke_api_key(m, key_id, x), inv);
        }
        CHECK_ZEROED(k);
        BAD(cg_revoke_api_key(m, x, NULL), inv);
        s = (char *)&bal;
        BAD(cg_list_api_keys_json(m, x, &s), inv);
        CHECK(s == NULL);
        GARBAGE(ver);
        BAD(cg_verify_api_key_credits(m, x, 0, &ver), want_key(v));
        CHECK_ZEROED(ver);
        GARBAGE(c);
        if (opt) {
            BAD(cg_record_usage(m, x, NULL, &(cg_usage){.input_tokens = 1}, NULL, &c), want_key(v));
            BAD(cg_record_usage(m, NULL, x, &(cg_usage){.input_tokens = 1}, NULL, &c), inv); /* a key id, not a UUID */
            BAD(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 1, .model = x}, NULL, &c), inv);
            BAD(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = 1}, x, &c), inv);
            BAD(cg_settle(m, hold_id, 0, &(cg_usage){.input_tokens = 1, .model = x}, &c), inv);
        }
        BAD(cg_settle(m, x, CREDITS(1), NULL, &c), inv);
        CHECK_ZEROED(c);
        GARBAGE(h);
        BAD(cg_reserve(m, x, CREDITS(1), NULL, 60, NULL, &h), want_key(v));
        if (opt) {
            BAD(cg_reserve(m, secret, 0, &(cg_usage){.input_tokens = 1, .model = x}, 60, NULL, &h), inv);
            BAD(cg_reserve(m, secret, CREDITS(1), NULL, 60, x, &h), inv);
        }
        CHECK_ZEROED(h);
        BAD(cg_release(m, x), inv);
        BAD(cg_set_model_price(m, x, 1, 1), inv);
    }
    CHECK(strlen(cg_last_error()) < 1000); /* the last call had a 1 MiB model name: no echo */
}

/* Malformed JSON metadata, ids, kinds, currencies, key hashes. */
static void test_bad_formats(void) {
    const cg_status inv = CG_INVALID_ARGUMENT;
    cg_entry e;
    cg_api_key k;
    char *s = NULL;
    const char *metas[] = {"", "{", "[1]", "1", "null", "\"x\"", "{\"a\":1}x", "{\"a\":NaN}", "{\"a\":Infinity}",
                           META_4097, META_70K, BIG_JSON};
    for (size_t i = 0; i < sizeof metas / sizeof *metas; i++) {
        BAD(cg_add_credits(m, "alice", CREDITS(1), NULL, &(cg_entry_options){.metadata_json = metas[i]}, &e), inv);
        BAD(cg_deduct_credits(m, "alice", CREDITS(1), &(cg_entry_options){.metadata_json = metas[i]}, &e), inv);
    }
    const char *ids[] = {"not-a-uuid", "sk_live_secret", "0190a0a0-0000-7000-8000-00000000000", " 0190a0a0-0000-7000-8000-000000000001",
                         "0190a0a0-0000-7000-8000-0000000000011", "{0190a0a0-0000-7000-8000-000000000001"};
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
        cg_usage_charge c;
        BAD(cg_revoke_api_key(m, ids[i], NULL), inv);
        BAD(cg_settle(m, ids[i], CREDITS(1), NULL, &c), inv);
        BAD(cg_release(m, ids[i]), inv);
        BAD(cg_transactions_json(m, "alice", 10, ids[i], &s), inv);
        BAD(cg_record_usage(m, NULL, ids[i], &(cg_usage){.input_tokens = 1}, NULL, &c), inv);
    }
    const char *kinds[] = {"usage", "deduct", "reversal", "GRANT", "grant ", "bonus"};
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++)
        BAD(cg_add_credits(m, "alice", CREDITS(1), kinds[i], NULL, &e), inv);
    const char *currencies[] = {"eur", "US", "usd ", "\xef\xbc\xb5SD"};
    for (size_t i = 0; i < sizeof currencies / sizeof *currencies; i++)
        BAD(cg_record_payment(m, "alice", "pi_2", 100, currencies[i], &e), inv);
    const char *reserved[] = {"payment:x", "reversal:x", "usage:x", "import:x"};
    for (size_t i = 0; i < sizeof reserved / sizeof *reserved; i++) {
        BAD(cg_add_credits(m, "alice", CREDITS(1), NULL, &(cg_entry_options){.idempotency_key = reserved[i]}, &e), inv);
        BAD(cg_deduct_credits(m, "alice", CREDITS(1), &(cg_entry_options){.idempotency_key = reserved[i]}, &e), inv);
    }
    char hex63[64], upper[65], nothex[65];
    memset(hex63, 'a', 63), hex63[63] = '\0';
    memset(upper, 'A', 64), upper[64] = '\0';
    memset(nothex, 'g', 64), nothex[64] = '\0';
    const char *hashes[] = {hex63, upper, nothex, BIG};
    for (size_t i = 0; i < sizeof hashes / sizeof *hashes; i++)
        BAD(cg_import_api_key(m, "alice", NULL, hashes[i], NULL, &k), inv);
    /* Legacy secrets that cannot be keys: 7 bytes, 513 bytes, our shape
     * with a bad checksum; neither or both of secret and hash. */
    char l513[514];
    memset(l513, 'k', 513), l513[513] = '\0';
    char tampered[128];
    snprintf(tampered, sizeof tampered, "%s", secret);
    tampered[20] = tampered[20] == 'a' ? 'b' : 'a';
    const char *secrets[] = {"sk_1234", l513, tampered};
    for (size_t i = 0; i < sizeof secrets / sizeof *secrets; i++)
        BAD(cg_import_api_key(m, "alice", secrets[i], NULL, NULL, &k), inv);
    BAD(cg_import_api_key(m, "alice", NULL, NULL, NULL, &k), inv);
    BAD(cg_import_api_key(m, "alice", "legacy-key-new-0002", upper, NULL, &k), inv);
    /* Keys that are not keys: InvalidApiKey. */
    cg_verification ver;
    cg_hold h;
    cg_usage_charge c;
    char upper_secret[128];
    snprintf(upper_secret, sizeof upper_secret, "%s", secret);
    for (char *p = upper_secret; *p; p++)
        if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 32);
    const char *keys[] = {"sk_1234", l513, tampered, upper_secret, "legacy-but-unknown-0001"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        BAD(cg_verify_api_key_credits(m, keys[i], 0, &ver), CG_INVALID_API_KEY);
        BAD(cg_reserve(m, keys[i], CREDITS(1), NULL, 60, NULL, &h), CG_INVALID_API_KEY);
        BAD(cg_record_usage(m, keys[i], NULL, &(cg_usage){.input_tokens = 1}, NULL, &c), CG_INVALID_API_KEY);
    }
    /* Either/or violations. */
    BAD(cg_record_usage(m, NULL, NULL, &(cg_usage){.input_tokens = 1}, NULL, &c), inv);
    BAD(cg_record_usage(m, secret, key_id, &(cg_usage){.input_tokens = 1}, NULL, &c), inv);
    BAD(cg_reserve(m, secret, CREDITS(1), &(cg_usage){.input_tokens = 5}, 60, NULL, &h), inv);
    BAD(cg_reserve(m, secret, CREDITS(1), &(cg_usage){.model = "gpt"}, 60, NULL, &h), inv);
    BAD(cg_settle(m, hold_id, CREDITS(1), &(cg_usage){.input_tokens = 5}, &c), inv);
    BAD(cg_settle(m, hold_id, CREDITS(1), &(cg_usage){.output_tokens = 5}, &c), inv);
    BAD(cg_settle(m, hold_id, CREDITS(1), &(cg_usage){.model = "gpt"}, &c), inv);
    CHECK(s == NULL);
}

/* Negative, zero and overflowing int64 amounts, tokens, ttls and limits. */
static void test_bad_numbers(void) {
    const cg_status inv = CG_INVALID_ARGUMENT;
    cg_entry e;
    cg_verification ver;
    cg_hold h;
    cg_usage_charge c;
    char *s = NULL;
    const int64_t amounts[] = {INT64_MIN, -MAX_AMOUNT_MICROS - 1, -1, 0, MAX_AMOUNT_MICROS + 1, INT64_MAX};
    for (size_t i = 0; i < sizeof amounts / sizeof *amounts; i++) {
        int64_t a = amounts[i];
        GARBAGE(e);
        BAD(cg_add_credits(m, "alice", a, NULL, NULL, &e), inv);
        CHECK_ZEROED(e);
        BAD(cg_add_credits(m, "alice", a, "purchase", NULL, &e), inv);
        BAD(cg_add_credits(m, "alice", a, "refund", NULL, &e), inv);
        BAD(cg_deduct_credits(m, "alice", a, NULL, &e), inv);
        if (a != 0) { /* 0 means "by tokens" */
            GARBAGE(h);
            BAD(cg_reserve(m, secret, a, NULL, 60, NULL, &h), inv);
            CHECK_ZEROED(h);
        }
        if (a != -1) BAD(cg_add_credits(m, "alice", a, "adjustment", NULL, &e), inv); /* -1 is a fine adjustment */
    }
    const int64_t thresholds[] = {INT64_MIN, -MAX_AMOUNT_MICROS, -1, MAX_AMOUNT_MICROS + 1, INT64_MAX};
    for (size_t i = 0; i < sizeof thresholds / sizeof *thresholds; i++) {
        int64_t t = thresholds[i];
        GARBAGE(ver);
        BAD(cg_verify_api_key_credits(m, secret, t, &ver), inv);
        CHECK_ZEROED(ver);
        BAD(cg_set_model_price(m, "gpt", t, 1), inv);
        BAD(cg_set_model_price(m, "gpt", 1, t), inv);
        GARBAGE(c);
        BAD(cg_settle(m, hold_id, t, NULL, &c), inv);
        CHECK_ZEROED(c);
    }
    const int64_t minors[] = {INT64_MIN, -1, 0, 100000000001LL, INT64_MAX};
    for (size_t i = 0; i < sizeof minors / sizeof *minors; i++)
        BAD(cg_record_payment(m, "alice", "pi_2", minors[i], NULL, &e), inv);
    const int64_t reversals[] = {INT64_MIN, -1, 1001, INT64_MAX}; /* 0 = all: valid */
    for (size_t i = 0; i < sizeof reversals / sizeof *reversals; i++)
        BAD(cg_reverse_payment(m, "pi_1", reversals[i], NULL, NULL, &e), inv);
    const int64_t tokens[] = {INT64_MIN, -1, MAX_TOKENS + 1, INT64_MAX};
    for (size_t i = 0; i < sizeof tokens / sizeof *tokens; i++) {
        int64_t t = tokens[i];
        BAD(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = t}, NULL, &c), inv);
        BAD(cg_record_usage(m, secret, NULL, &(cg_usage){.output_tokens = t}, NULL, &c), inv);
        BAD(cg_record_usage(m, NULL, key_id, &(cg_usage){.input_tokens = t}, NULL, &c), inv);
        BAD(cg_reserve(m, secret, 0, &(cg_usage){.input_tokens = t}, 60, NULL, &h), inv);
        BAD(cg_settle(m, hold_id, 0, &(cg_usage){.input_tokens = t}, &c), inv);
        BAD(cg_settle(m, hold_id, 0, &(cg_usage){.output_tokens = t}, &c), inv);
    }
    /* A usage whose price is beyond the largest amount: refused, not wrapped. */
    BAD(cg_record_usage(m, secret, NULL, &(cg_usage){.input_tokens = MAX_TOKENS, .model = "max"}, NULL, &c), inv);
    BAD(cg_reserve(m, secret, 0, &(cg_usage){.input_tokens = MAX_TOKENS, .model = "max"}, 60, NULL, &h), inv);
    const int64_t ttls[] = {INT64_MIN, -1, 86401, INT64_MAX}; /* 0 = 600: valid */
    for (size_t i = 0; i < sizeof ttls / sizeof *ttls; i++)
        BAD(cg_reserve(m, secret, CREDITS(1), NULL, ttls[i], NULL, &h), inv);
    const int64_t limits[] = {INT64_MIN, -1, 1001, 4294967296LL, INT64_MAX}; /* 0 = 50: valid */
    for (size_t i = 0; i < sizeof limits / sizeof *limits; i++) {
        s = (char *)&c;
        BAD(cg_transactions_json(m, "alice", limits[i], NULL, &s), inv);
        CHECK(s == NULL);
    }
}

/* Well-formed ids the ledger never issued, and other users' ids. */
static void test_unknown_ids(void) {
    cg_usage_charge c;
    char *s = NULL;
    for (int i = 0; i < 4; i++) {
        const char *id = unknown_ids[i];
        BAD(cg_revoke_api_key(m, id, NULL), CG_NOT_FOUND);
        BAD(cg_revoke_api_key(m, id, "alice"), CG_NOT_FOUND);
        GARBAGE(c);
        BAD(cg_settle(m, id, CREDITS(1), NULL, &c), CG_NOT_FOUND);
        CHECK_ZEROED(c);
        BAD(cg_release(m, id), CG_NOT_FOUND);
        BAD(cg_transactions_json(m, "alice", 10, id, &s), CG_NOT_FOUND);
        CHECK(s == NULL);
        BAD(cg_record_usage(m, NULL, id, &(cg_usage){.input_tokens = 1}, NULL, &c), CG_INVALID_API_KEY);
    }
    cg_entry e;
    BAD(cg_transactions_json(m, "bob", 10, entry_id, &s), CG_NOT_FOUND); /* alice's entry */
    BAD(cg_revoke_api_key(m, key_id, "bob"), CG_NOT_FOUND);              /* alice's key */
    BAD(cg_reverse_payment(m, "pi_unknown", 0, NULL, NULL, &e), CG_NOT_FOUND);
    BAD(cg_reverse_payment(m, "pi_unknown", 1, NULL, "re_1", &e), CG_NOT_FOUND);
    BAD(cg_record_payment(m, "bob", "pi_1", 1000, NULL, &e), CG_IDEMPOTENCY_CONFLICT);
    BAD(cg_record_payment(m, "alice", "pi_1", 999, NULL, &e), CG_IDEMPOTENCY_CONFLICT);
    CHECK(s == NULL);
}

/* A secret passed where an id belongs, near misses of it, a revoked key:
 * no message quotes it. */
static void test_secret_never_in_errors(void) {
    cg_usage_charge c;
    cg_verification ver;
    cg_hold h;
    cg_api_key k;
    const char *body = secret + 3; /* without "sk_" */
    char near[128];
#define NO_SECRET(call, want)                                                                            \
    do {                                                                                                 \
        BAD(call, want);                                                                                 \
        CHECK(strstr(cg_last_error(), body) == NULL);                                                    \
        CHECK(strstr(cg_last_error(), secret + 10) == NULL);                                             \
    } while (0)
    NO_SECRET(cg_record_usage(m, NULL, secret, &(cg_usage){.input_tokens = 1}, NULL, &c), CG_INVALID_ARGUMENT);
    NO_SECRET(cg_revoke_api_key(m, secret, NULL), CG_INVALID_ARGUMENT);
    NO_SECRET(cg_release(m, secret), CG_INVALID_ARGUMENT);
    NO_SECRET(cg_settle(m, secret, CREDITS(1), NULL, &c), CG_INVALID_ARGUMENT);
    NO_SECRET(cg_transactions_json(m, "alice", 10, secret, &(char *){NULL}), CG_INVALID_ARGUMENT);
    NO_SECRET(cg_verify_api_key_credits(m, secret, MAX_AMOUNT_MICROS, &ver), CG_INSUFFICIENT_CREDITS);
    NO_SECRET(cg_import_api_key(m, "bob", secret, NULL, NULL, &k), CG_IDEMPOTENCY_CONFLICT);
    size_t n = strlen(secret);
    const size_t positions[] = {0, 3, n / 2, n - 1};
    for (size_t i = 0; i < sizeof positions / sizeof *positions; i++) {
        snprintf(near, sizeof near, "%s", secret);
        near[positions[i]] = near[positions[i]] == 'Q' ? 'R' : 'Q';
        NO_SECRET(cg_verify_api_key_credits(m, near, 0, &ver), CG_INVALID_API_KEY);
        NO_SECRET(cg_reserve(m, near, CREDITS(1), NULL, 60, NULL, &h), CG_INVALID_API_KEY);
        NO_SECRET(cg_record_usage(m, near, NULL, &(cg_usage){.input_tokens = 1}, NULL, &c), CG_INVALID_API_KEY);
        CHECK(strstr(cg_last_error(), near + 3) == NULL);
    }
#undef NO_SECRET
}

int main(void) {
    harness_env();
    memset(TEXT_256, 'y', 256);
    BIG = malloc(MIB + 1);
    BIG_JSON = malloc(MIB + 16);
    if (BIG == NULL || BIG_JSON == NULL) return 2;
    memset(BIG, 'x', MIB), BIG[MIB] = '\0';
    /* {"b":"yyyy..."}: 8 bytes around the value. */
    snprintf(META_4097, sizeof META_4097, "{\"b\":\"%0*d\"}", 4097 - 8, 0);
    CHECK(strlen(META_4097) == 4097);
    snprintf(META_70K, sizeof META_70K, "{\"b\":\"%0*d\"}", (int)sizeof META_70K - 9, 0);
    snprintf(BIG_JSON, MIB + 16, "{\"b\":\"%0*d\"}", MIB, 0);

    setup();
    char *before = snapshot(m);
    RUN(test_null_pointers);
    RUN(test_bad_strings);
    RUN(test_bad_formats);
    RUN(test_bad_numbers);
    RUN(test_unknown_ids);
    RUN(test_secret_never_in_errors);
    char *after = snapshot(m);
    int unchanged = strcmp(before, after) == 0;
    CHECK(unchanged);
    if (!unchanged) fprintf(stderr, "ledger before:\n%s\nafter:\n%s\n", before, after);
    /* The hold is still active: available = balance - 5 credits. */
    CHECK(count_of(after, "\"held_micros\":5000000") == 1);
    printf("bad input (c): %d inputs, all rejected with the documented code, ledger %s\n", inputs,
           unchanged ? "unchanged" : "CHANGED");
    free(before);
    free(after);
    cg_string_free(secret);
    cg_close(m);
    free(BIG);
    free(BIG_JSON);
    remove_temp_dbs();
    return harness_summary("test_bad_input");
}
