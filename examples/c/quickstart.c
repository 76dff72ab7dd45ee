/*
 * creditgate quickstart in C: the four scenarios of the seed on a temporary
 * SQLite database.
 *
 *   1. A new user tries to create an API key: 402 Payment Required.
 *   2. The user pays $5 (5,000 credits): the key is created.
 *   3. Each call is verified, then charged tokens/1000 credits.
 *   4. When the credits run out, the next verify is 402.
 *
 * Build and run: make -C examples/c run (see the Makefile beside this file).
 */
#define _GNU_SOURCE /* mkdtemp */
#include <creditgate.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Prints micro-credits as a plain decimal number of credits ("4998.5"). */
static const char *credits(int64_t micros, char *buf, size_t size) {
    uint64_t abs = micros < 0 ? (uint64_t)0 - (uint64_t)micros : (uint64_t)micros;
    uint64_t whole = abs / CG_MICROS_PER_CREDIT, frac = abs % CG_MICROS_PER_CREDIT;
    int n = snprintf(buf, size, "%s%" PRIu64, micros < 0 ? "-" : "", whole);
    if (frac != 0 && n > 0 && (size_t)n < size) {
        char digits[8];
        snprintf(digits, sizeof digits, "%06" PRIu64, frac);
        for (int i = 5; i > 0 && digits[i] == '0'; i--) digits[i] = '\0';
        snprintf(buf + n, size - (size_t)n, ".%s", digits);
    }
    return buf;
}

/* Fails the program when a call did not return what was expected. */
static void expect(cg_status got, cg_status want, const char *what) {
    if (got != want) {
        fprintf(stderr, "%s: expected %s, got %s (%s)\n", what, cg_status_name(want), cg_status_name(got),
                cg_last_error());
        exit(1);
    }
}

int main(void) {
    char dir[] = "/tmp/creditgate-quickstart-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    char db[128], url[160], buf[32];
    snprintf(db, sizeof db, "%s/ledger.db", dir);
    snprintf(url, sizeof url, "sqlite:///%s", db); /* absolute path: sqlite:////tmp/... */

    printf("creditgate %s, database %s\n", cg_version(), url);
    cg_manager *m = NULL;
    expect(cg_open(url, &m), CG_OK, "cg_open");

    /* 1. No credits yet: key creation is refused with 402. */
    char *secret = NULL;
    cg_api_key key;
    cg_status s = cg_create_api_key(m, "alice", "laptop", &secret, &key);
    expect(s, CG_INSUFFICIENT_CREDITS, "first key before paying");
    printf("1. create key before paying -> HTTP %u %s: %s\n", cg_status_http(s), cg_status_name(s), cg_last_error());

    /* 2. The payment webhook: $5.00 buys 5,000 credits; a second delivery
     *    of the same webhook credits nothing. */
    cg_entry entry;
    expect(cg_record_payment(m, "alice", "pi_quickstart_1", 500, "usd", &entry), CG_OK, "record_payment");
    printf("2. paid $5.00 -> balance %s credits\n", credits(entry.balance_after_micros, buf, sizeof buf));
    expect(cg_record_payment(m, "alice", "pi_quickstart_1", 500, "USD", &entry), CG_OK, "webhook again");
    printf("   same webhook again -> replayed=%s, balance %s\n", entry.replayed ? "true" : "false",
           credits(entry.balance_after_micros, buf, sizeof buf));

    expect(cg_create_api_key(m, "alice", "laptop", &secret, &key), CG_OK, "create key");
    printf("   key %s... created (id %s)\n", key.prefix, key.key_id);

    /* 3. Calls: verify (1 credit minimum), then charge the real usage. */
    int call = 0;
    for (;;) {
        cg_verification v;
        s = cg_verify_api_key_credits(m, secret, CG_MICROS_PER_CREDIT, &v);
        if (s != CG_OK) break;
        cg_usage_charge charge;
        char request_id[32];
        snprintf(request_id, sizeof request_id, "req-%d", ++call);
        cg_usage usage = {.input_tokens = 600000, .output_tokens = 400000, .model = "demo-model"};
        expect(cg_record_usage(m, secret, NULL, &usage, request_id, &charge), CG_OK, "record_usage");
        char charged[32];
        printf("3. call %d: %" PRId64 " tokens, charged %s, balance %s\n", call, charge.tokens,
               credits(charge.charged_micros, charged, sizeof charged),
               credits(charge.balance_micros, buf, sizeof buf));
    }

    /* 4. Out of credits: the next call is refused with 402. */
    expect(s, CG_INSUFFICIENT_CREDITS, "verify after the credits ran out");
    printf("4. next call -> HTTP %u %s: %s\n", cg_status_http(s), cg_status_name(s), cg_last_error());

    char *audit = NULL;
    expect(cg_audit_json(m, &audit), CG_OK, "audit");
    printf("audit: %s\n", audit);
    int ok = strstr(audit, "\"ok\":true") != NULL;

    cg_string_free(audit);
    cg_string_free(secret); /* zeroes the secret before freeing it */
    cg_close(m);

    const char *suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        char path[160];
        snprintf(path, sizeof path, "%s%s", db, suffixes[i]);
        unlink(path);
    }
    rmdir(dir);
    return ok ? 0 : 1;
}
