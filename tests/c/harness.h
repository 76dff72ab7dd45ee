/*
 * A tiny test harness for the creditgate C tests: CHECK* macros count
 * checks; RUN runs one test function; the summary line is
 * "N passed, M failed" (tests, not checks), and the exit code is 1 when
 * anything failed.
 */
#ifndef CG_TEST_HARNESS_H
#define CG_TEST_HARNESS_H

#define _GNU_SOURCE /* mkdtemp, setenv */
#include <creditgate.h>

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static atomic_int harness_checks;
static atomic_int harness_check_failures;
static int harness_tests_passed;
static int harness_tests_failed;

#define CHECK(cond)                                                                                      \
    do {                                                                                                 \
        atomic_fetch_add(&harness_checks, 1);                                                            \
        if (!(cond)) {                                                                                   \
            atomic_fetch_add(&harness_check_failures, 1);                                                \
            fprintf(stderr, "%s:%d: CHECK(%s) failed; last error: %s\n", __FILE__, __LINE__, #cond,     \
                    cg_last_error());                                                                    \
        }                                                                                                \
    } while (0)

/* The call returns `want`. */
#define CHECK_STATUS(call, want)                                                                         \
    do {                                                                                                 \
        cg_status check_got_ = (call);                                                                   \
        atomic_fetch_add(&harness_checks, 1);                                                            \
        if (check_got_ != (want)) {                                                                      \
            atomic_fetch_add(&harness_check_failures, 1);                                                \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s; last error: %s\n", __FILE__, __LINE__,  \
                    #call, cg_status_name(check_got_), cg_status_name(want), cg_last_error());          \
        }                                                                                                \
    } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, CG_OK)

/* The call fails with `want`, and cg_last_error() contains `needle`. */
#define CHECK_ERR(call, want, needle)                                                                    \
    do {                                                                                                 \
        CHECK_STATUS(call, want);                                                                        \
        const char *check_msg_ = cg_last_error();                                                       \
        atomic_fetch_add(&harness_checks, 1);                                                            \
        if (check_msg_ == NULL || strstr(check_msg_, (needle)) == NULL) {                                \
            atomic_fetch_add(&harness_check_failures, 1);                                                \
            fprintf(stderr, "%s:%d: %s: message %s lacks \"%s\"\n", __FILE__, __LINE__, #call,         \
                    check_msg_ ? check_msg_ : "(NULL)", (needle));                                       \
        }                                                                                                \
    } while (0)

/* `haystack` (a string from the library) contains `needle`. */
#define CHECK_CONTAINS(haystack, needle)                                                                 \
    do {                                                                                                 \
        const char *check_h_ = (haystack);                                                               \
        atomic_fetch_add(&harness_checks, 1);                                                            \
        if (check_h_ == NULL || strstr(check_h_, (needle)) == NULL) {                                    \
            atomic_fetch_add(&harness_check_failures, 1);                                                \
            fprintf(stderr, "%s:%d: %s lacks \"%s\": %s\n", __FILE__, __LINE__, #haystack, (needle),    \
                    check_h_ ? check_h_ : "(NULL)");                                                     \
        }                                                                                                \
    } while (0)

#define CHECK_EQ_I64(a, b)                                                                               \
    do {                                                                                                 \
        int64_t check_a_ = (a), check_b_ = (b);                                                          \
        atomic_fetch_add(&harness_checks, 1);                                                            \
        if (check_a_ != check_b_) {                                                                      \
            atomic_fetch_add(&harness_check_failures, 1);                                                \
            fprintf(stderr, "%s:%d: %s == %" PRId64 ", expected %s == %" PRId64 "\n", __FILE__, __LINE__, \
                    #a, check_a_, #b, check_b_);                                                         \
        }                                                                                                \
    } while (0)

#define RUN(test)                                                                                        \
    do {                                                                                                 \
        int run_before_ = atomic_load(&harness_check_failures);                                          \
        test();                                                                                          \
        if (atomic_load(&harness_check_failures) == run_before_) {                                       \
            harness_tests_passed++;                                                                      \
            printf("ok   %s\n", #test);                                                                  \
        } else {                                                                                         \
            harness_tests_failed++;                                                                      \
            printf("FAIL %s\n", #test);                                                                  \
        }                                                                                                \
        fflush(stdout);                                                                                  \
    } while (0)

/* Prints the summary and returns the exit code. */
static int harness_summary(const char *suite) {
    /* A closed handle's connection pool stops its helper threads without
     * joining them; give them a moment to finish, so that valgrind's leak
     * check at exit does not count memory a live thread still owns. */
    usleep(200 * 1000);
    printf("%s: %d checks\n", suite, atomic_load(&harness_checks));
    printf("%d passed, %d failed\n", harness_tests_passed, harness_tests_failed);
    return harness_tests_failed == 0 ? 0 : 1;
}

/* ----- temporary databases -------------------------------------------- */

static char harness_dir[64];
static int harness_db_count;

/* A fresh SQLite URL in this run's temporary directory. */
static void temp_url(char *url, size_t size) {
    if (harness_dir[0] == '\0') {
        snprintf(harness_dir, sizeof harness_dir, "/tmp/creditgate-ctest-XXXXXX");
        if (mkdtemp(harness_dir) == NULL) {
            perror("mkdtemp");
            exit(2);
        }
    }
    snprintf(url, size, "sqlite:///%s/db%d.sqlite", harness_dir, harness_db_count++);
}

/* Opens a fresh ledger; exits when that fails (nothing else can run). */
static cg_manager *open_temp(void) {
    char url[128];
    temp_url(url, sizeof url);
    cg_manager *m = NULL;
    if (cg_open(url, &m) != CG_OK || m == NULL) {
        fprintf(stderr, "cannot open %s: %s\n", url, cg_last_error());
        exit(2);
    }
    return m;
}

/* Removes every database file this run created, and the directory. */
static void remove_temp_dbs(void) {
    if (harness_dir[0] == '\0') return;
    const char *suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (int i = 0; i < harness_db_count; i++) {
        for (size_t s = 0; s < sizeof suffixes / sizeof *suffixes; s++) {
            char path[128];
            snprintf(path, sizeof path, "%s/db%d.sqlite%s", harness_dir, i, suffixes[s]);
            unlink(path);
        }
    }
    rmdir(harness_dir);
}

/* Counts the occurrences of `needle` in `s`. */
static int count_of(const char *s, const char *needle) {
    int n = 0;
    size_t len = strlen(needle);
    for (const char *p = s ? strstr(s, needle) : NULL; p != NULL; p = strstr(p + len, needle)) n++;
    return n;
}

/* Settings every test assumes; the environment of the caller must not leak in. */
static void harness_env(void) {
    const char *unset[] = {"DATABASE_URL", "CREDITS_PER_USD", "CREDITS_PER_1K_TOKENS", "API_KEY_PREFIX",
                           "API_KEY_PEPPER", "MAX_ACTIVE_KEYS_PER_USER", "MAX_ACTIVE_HOLDS_PER_USER",
                           "CREDITGATE_POOL_SIZE", "CREDITGATE_SQLITE_SYNCHRONOUS"};
    for (size_t i = 0; i < sizeof unset / sizeof *unset; i++) unsetenv(unset[i]);
    setenv("MIN_CREDITS_API_KEY", "5000", 1);
    /* Sanitizers and valgrind slow every thread down; waiting for the
     * write lock must not time out because of that. */
    setenv("CREDITGATE_BUSY_TIMEOUT_MS", "120000", 1);
}

#define CREDITS(n) ((int64_t)(n) * CG_MICROS_PER_CREDIT)

#endif /* CG_TEST_HARNESS_H */
