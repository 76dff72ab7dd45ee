/*
 * One handle, many threads (docs/reference.md: concurrent callers can never
 * overdraw a strict operation or lose an update).
 *
 * - strict: 12 threads share one account and race strict deducts and
 *   reserve -> settle pairs (usage bounded by its hold) against it. No call
 *   may overdraw, every success is in the ledger, failures are 402 only,
 *   and the audit balances.
 * - usage: 8 threads charge the same 40 request ids; each id is charged
 *   exactly once, the rest are replays.
 * - last error: cg_last_error() is per thread.
 */
#include "harness.h"

#include <pthread.h>

#define STRICT_THREADS 12
#define STRICT_ROUNDS 30
#define USAGE_THREADS 8
#define USAGE_REQUESTS 40

struct strict_shared {
    cg_manager *m;
    const char *secret;
    pthread_barrier_t start;
};

struct strict_result {
    int64_t deducted_micros, settled_micros;
    int deducts_ok, settles_ok, denied, unexpected;
    int64_t lowest_balance_after;
};

static void *strict_worker(void *arg) {
    struct strict_shared *s = arg;
    struct strict_result *r = calloc(1, sizeof *r);
    if (r == NULL) return NULL;
    r->lowest_balance_after = INT64_MAX;
    pthread_barrier_wait(&s->start);
    for (int i = 0; i < STRICT_ROUNDS; i++) {
        cg_entry e;
        cg_status st = cg_deduct_credits(s->m, "shared", CREDITS(1), NULL, &e);
        if (st == CG_OK) {
            r->deducts_ok++;
            r->deducted_micros += CREDITS(1);
            if (e.balance_after_micros < r->lowest_balance_after) r->lowest_balance_after = e.balance_after_micros;
        } else if (st == CG_INSUFFICIENT_CREDITS) {
            r->denied++;
        } else {
            r->unexpected++;
            fprintf(stderr, "deduct: %s: %s\n", cg_status_name(st), cg_last_error());
        }

        /* Streaming-style usage: hold 2 credits, settle 1.5 (within the hold). */
        cg_hold h;
        st = cg_reserve(s->m, s->secret, CREDITS(2), NULL, 0, NULL, &h);
        if (st == CG_INSUFFICIENT_CREDITS) {
            r->denied++;
            continue;
        }
        if (st != CG_OK) {
            r->unexpected++;
            fprintf(stderr, "reserve: %s: %s\n", cg_status_name(st), cg_last_error());
            continue;
        }
        cg_usage_charge c;
        st = cg_settle(s->m, h.hold_id, 0, &(cg_usage){.input_tokens = 1000, .output_tokens = 500}, &c);
        if (st == CG_OK && !c.overdraft) {
            r->settles_ok++;
            r->settled_micros += c.charged_micros;
            if (c.balance_micros < r->lowest_balance_after) r->lowest_balance_after = c.balance_micros;
        } else {
            r->unexpected++;
            fprintf(stderr, "settle: %s: %s\n", cg_status_name(st), cg_last_error());
        }
    }
    return r;
}

static void test_strict_operations_never_overdraw(void) {
    cg_manager *m = open_temp();
    cg_entry e;
    cg_api_key key;
    char *secret = NULL;
    /* The first key needs 5,000 credits; then the account is adjusted down
     * to 500, while the threads want 12 * 30 * (1 + 1.5) = 900. */
    CHECK_OK(cg_add_credits(m, "shared", CREDITS(5000), "grant", NULL, &e));
    CHECK_OK(cg_create_api_key(m, "shared", NULL, &secret, &key));
    CHECK_OK(cg_add_credits(m, "shared", -CREDITS(4500), "adjustment", NULL, &e));
    const int64_t initial = CREDITS(500);
    CHECK_EQ_I64(e.balance_after_micros, initial);

    struct strict_shared shared = {.m = m, .secret = secret};
    pthread_barrier_init(&shared.start, NULL, STRICT_THREADS);
    pthread_t threads[STRICT_THREADS];
    for (int i = 0; i < STRICT_THREADS; i++) CHECK(pthread_create(&threads[i], NULL, strict_worker, &shared) == 0);

    struct strict_result total = {.lowest_balance_after = INT64_MAX};
    for (int i = 0; i < STRICT_THREADS; i++) {
        struct strict_result *r = NULL;
        CHECK(pthread_join(threads[i], (void **)&r) == 0 && r != NULL);
        if (r == NULL) continue;
        total.deducted_micros += r->deducted_micros;
        total.settled_micros += r->settled_micros;
        total.deducts_ok += r->deducts_ok;
        total.settles_ok += r->settles_ok;
        total.denied += r->denied;
        total.unexpected += r->unexpected;
        if (r->lowest_balance_after < total.lowest_balance_after) total.lowest_balance_after = r->lowest_balance_after;
        free(r);
    }
    pthread_barrier_destroy(&shared.start);
    printf("     strict: %d deducts, %d settles, %d denied (402), lowest balance %" PRId64 " micros\n",
           total.deducts_ok, total.settles_ok, total.denied, total.lowest_balance_after);

    CHECK(total.unexpected == 0);
    CHECK(total.denied > 0); /* demand exceeded the balance: the race was real */
    CHECK(total.lowest_balance_after >= 0);
    int64_t balance = -1;
    CHECK_OK(cg_balance(m, "shared", &balance));
    CHECK(balance >= 0);
    CHECK_EQ_I64(balance, initial - total.deducted_micros - total.settled_micros); /* nothing lost */

    char *json = NULL;
    CHECK_OK(cg_account_json(m, "shared", &json));
    CHECK_CONTAINS(json, "\"held_micros\":0");
    cg_string_free(json);
    CHECK_OK(cg_transactions_json(m, "shared", 1000, NULL, &json));
    CHECK(count_of(json, "\"seq\":") == 2 + total.deducts_ok + total.settles_ok);
    cg_string_free(json);
    CHECK_OK(cg_audit_json(m, &json));
    CHECK_CONTAINS(json, "\"ok\":true");
    cg_string_free(json);
    cg_string_free(secret);
    cg_close(m);
}

struct usage_shared {
    cg_manager *m;
    const char *secret;
    pthread_barrier_t start;
};

struct usage_result {
    int charged, replayed, unexpected;
};

static void *usage_worker(void *arg) {
    struct usage_shared *s = arg;
    struct usage_result *r = calloc(1, sizeof *r);
    if (r == NULL) return NULL;
    pthread_barrier_wait(&s->start);
    for (int i = 0; i < USAGE_REQUESTS; i++) {
        char request_id[32];
        snprintf(request_id, sizeof request_id, "req-%d", i);
        cg_usage_charge c;
        cg_status st = cg_record_usage(s->m, s->secret, NULL, &(cg_usage){.input_tokens = 1000,
                                       .output_tokens = 1000}, request_id, &c);
        if (st != CG_OK) {
            r->unexpected++;
            fprintf(stderr, "record_usage: %s: %s\n", cg_status_name(st), cg_last_error());
        } else if (c.replayed) {
            r->replayed++;
        } else {
            r->charged++;
        }
    }
    return r;
}

static void test_concurrent_usage_charges_each_request_once(void) {
    cg_manager *m = open_temp();
    cg_entry e;
    cg_api_key key;
    char *secret = NULL;
    CHECK_OK(cg_record_payment(m, "streamer", "pi_threads", 500, "USD", &e));
    CHECK_OK(cg_create_api_key(m, "streamer", NULL, &secret, &key));

    struct usage_shared shared = {.m = m, .secret = secret};
    pthread_barrier_init(&shared.start, NULL, USAGE_THREADS);
    pthread_t threads[USAGE_THREADS];
    for (int i = 0; i < USAGE_THREADS; i++) CHECK(pthread_create(&threads[i], NULL, usage_worker, &shared) == 0);
    struct usage_result total = {0};
    for (int i = 0; i < USAGE_THREADS; i++) {
        struct usage_result *r = NULL;
        CHECK(pthread_join(threads[i], (void **)&r) == 0 && r != NULL);
        if (r == NULL) continue;
        total.charged += r->charged;
        total.replayed += r->replayed;
        total.unexpected += r->unexpected;
        free(r);
    }
    pthread_barrier_destroy(&shared.start);
    printf("     usage: %d charged, %d replayed\n", total.charged, total.replayed);

    CHECK(total.unexpected == 0);
    CHECK(total.charged == USAGE_REQUESTS);
    CHECK(total.replayed == USAGE_REQUESTS * (USAGE_THREADS - 1));
    int64_t balance = 0;
    CHECK_OK(cg_balance(m, "streamer", &balance));
    CHECK_EQ_I64(balance, CREDITS(5000) - USAGE_REQUESTS * CREDITS(2));
    char *json = NULL;
    CHECK_OK(cg_metrics_json(m, &json));
    char want[64];
    snprintf(want, sizeof want, "\"usage_charges_total\":%d", USAGE_REQUESTS);
    CHECK_CONTAINS(json, want);
    cg_string_free(json);
    CHECK_OK(cg_audit_json(m, &json));
    CHECK_CONTAINS(json, "\"ok\":true");
    cg_string_free(json);
    cg_string_free(secret);
    cg_close(m);
}

struct last_error_shared {
    cg_manager *m;
    pthread_barrier_t failed, checked;
};

static void *succeeding_thread(void *arg) {
    struct last_error_shared *s = arg;
    pthread_barrier_wait(&s->failed); /* the main thread has just failed */
    int64_t balance;
    cg_status st = cg_balance(s->m, "someone", &balance);
    int ok = st == CG_OK && strcmp(cg_last_error(), "") == 0;
    pthread_barrier_wait(&s->checked);
    return ok ? s : NULL;
}

static void test_last_error_is_per_thread(void) {
    struct last_error_shared s = {.m = open_temp()};
    pthread_barrier_init(&s.failed, NULL, 2);
    pthread_barrier_init(&s.checked, NULL, 2);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, succeeding_thread, &s) == 0);
    int64_t balance;
    CHECK_ERR(cg_balance(s.m, NULL, &balance), CG_INVALID_ARGUMENT, "user_id is NULL");
    pthread_barrier_wait(&s.failed);
    pthread_barrier_wait(&s.checked); /* the other thread succeeded meanwhile */
    CHECK_CONTAINS(cg_last_error(), "user_id is NULL");
    void *ok = NULL;
    CHECK(pthread_join(t, &ok) == 0 && ok != NULL);
    pthread_barrier_destroy(&s.failed);
    pthread_barrier_destroy(&s.checked);
    cg_close(s.m);
}

int main(void) {
    harness_env();
    RUN(test_strict_operations_never_overdraw);
    RUN(test_concurrent_usage_charges_each_request_once);
    RUN(test_last_error_is_per_thread);
    remove_temp_dbs();
    return harness_summary("test_threads");
}
