/*
 * Signed webhooks (issue 21) through the C API: a receiver thread on
 * 127.0.0.1 (allow-listed through CREDITGATE_WEBHOOK_ALLOWED_HOSTS) gets an
 * event from cg_deliver_webhooks and checks it with cg_verify_webhook;
 * failures, dead letters and replay; enable, disable, delete, rotate; and
 * every new function's NULL and invalid arguments with their documented
 * status and reset out-pointers.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <strings.h>
#include <sys/socket.h>

static const char BAD_UTF8[] = "al\xff" "ice";
static const char KEY_HEX[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/* ----- a tiny HTTP receiver ------------------------------------------- */

#define MAX_REQUESTS 4

/* One request as received: its three webhook headers and body. */
typedef struct {
    char id[64];
    char timestamp[32];
    char signature[256];
    char body[4096];
    size_t body_len;
} received;

/* A listening socket answering each connection with the next of `statuses`,
 * recording the requests; `port` is where it listens. */
typedef struct {
    int fd;
    int port;
    int statuses[MAX_REQUESTS];
    int count; /* connections to answer */
    received got[MAX_REQUESTS];
    int served;
    pthread_t thread;
} receiver;

static void header_value(const char *head, const char *name, char *out, size_t size) {
    out[0] = '\0';
    size_t len = strlen(name);
    for (const char *line = head; line != NULL && *line != '\0';) {
        if (strncasecmp(line, name, len) == 0 && line[len] == ':') {
            const char *v = line + len + 1;
            while (*v == ' ') v++;
            size_t n = strcspn(v, "\r\n");
            if (n >= size) n = size - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return;
        }
        line = strstr(line, "\r\n");
        if (line != NULL) line += 2;
    }
}

/* Reads one request (headers, then Content-Length bytes of body). */
static int read_request(int c, received *r) {
    static char buf[8192];
    size_t used = 0;
    char *end = NULL;
    while (end == NULL) {
        ssize_t n = recv(c, buf + used, sizeof buf - 1 - used, 0);
        if (n <= 0) return -1;
        used += (size_t)n;
        buf[used] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (end == NULL && used == sizeof buf - 1) return -1;
    }
    *end = '\0';
    char length[32];
    header_value(buf, "content-length", length, sizeof length);
    header_value(buf, "webhook-id", r->id, sizeof r->id);
    header_value(buf, "webhook-timestamp", r->timestamp, sizeof r->timestamp);
    header_value(buf, "webhook-signature", r->signature, sizeof r->signature);
    size_t want = (size_t)strtoul(length, NULL, 10);
    if (want >= sizeof r->body) return -1;
    size_t have = used - (size_t)(end + 4 - buf);
    if (have > want) have = want;
    memcpy(r->body, end + 4, have);
    while (have < want) {
        ssize_t n = recv(c, r->body + have, want - have, 0);
        if (n <= 0) return -1;
        have += (size_t)n;
    }
    r->body[want] = '\0';
    r->body_len = want;
    return 0;
}

static void *serve(void *arg) {
    receiver *rx = arg;
    while (rx->served < rx->count) {
        /* Bounded, so that a delivery that never comes fails the test
         * instead of hanging it. */
        struct pollfd p = {.fd = rx->fd, .events = POLLIN};
        if (poll(&p, 1, 60 * 1000) != 1) break;
        int c = accept(rx->fd, NULL, NULL);
        if (c < 0) break;
        if (read_request(c, &rx->got[rx->served]) == 0) {
            char reply[128];
            int n = snprintf(reply, sizeof reply, "HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                             rx->statuses[rx->served]);
            if (send(c, reply, (size_t)n, MSG_NOSIGNAL) != n) fprintf(stderr, "receiver: short send\n");
            rx->served++;
        }
        close(c);
    }
    return NULL;
}

/* Opens the receiver's socket on 127.0.0.1 (any free port). */
static void receiver_open(receiver *rx) {
    memset(rx, 0, sizeof *rx);
    rx->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (rx->fd < 0 || bind(rx->fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(rx->fd, 8) != 0 ||
        getsockname(rx->fd, (struct sockaddr *)&a, &len) != 0) {
        perror("receiver");
        exit(2);
    }
    rx->port = ntohs(a.sin_port);
}

/* Answers the next `n` connections with `statuses`, in a thread. */
static void receiver_start(receiver *rx, int n, const int *statuses) {
    rx->count = rx->served + n;
    for (int i = 0; i < n; i++) rx->statuses[rx->served + i] = statuses[i];
    if (pthread_create(&rx->thread, NULL, serve, rx) != 0) {
        perror("pthread_create");
        exit(2);
    }
}

static void receiver_wait(receiver *rx) { pthread_join(rx->thread, NULL); }

static void receiver_url(const receiver *rx, char *url, size_t size) {
    snprintf(url, size, "http://127.0.0.1:%d/hooks/creditgate", rx->port);
}

/* A request to verify, from what the receiver recorded. */
static cg_webhook_request request_of(const received *r) {
    return (cg_webhook_request){.payload = (const uint8_t *)r->body,
                                .payload_len = r->body_len,
                                .webhook_id = r->id,
                                .webhook_timestamp = r->timestamp,
                                .webhook_signature = r->signature};
}

/* Delivery passes until one is not held back by a backoff (a few ms here):
 * what each did, summed. */
static cg_delivery_report deliver(cg_manager *m, const cg_delivery_options *o) {
    cg_delivery_report sum = {0}, r;
    for (int pass = 0; pass < 2000; pass++) {
        CHECK_OK(cg_deliver_webhooks(m, o, &r));
        sum.sent += r.sent;
        sum.failed += r.failed;
        sum.dead_lettered += r.dead_lettered;
        if (r.busy == 0) break;
        usleep(1000);
    }
    return sum;
}

/* ----- tests ------------------------------------------------------------ */

static void test_deliver_and_verify(void) {
    cg_manager *m = open_temp();
    receiver rx;
    receiver_open(&rx);
    char url[128];
    receiver_url(&rx, url, sizeof url);

    char *secret = NULL;
    cg_webhook wh;
    CHECK_OK(cg_create_webhook(m, url, "purchase.first", "billing", &secret, &wh));
    CHECK(secret != NULL && strncmp(secret, "whsec_", 6) == 0);
    CHECK(strncmp(wh.id, "wh_", 3) == 0 && strlen(wh.id) == 35);
    cg_entry e;
    CHECK_OK(cg_record_payment(m, "alice", "pi_1", 500, "USD", &e)); /* purchase.first */

    receiver_start(&rx, 1, (int[]){200});
    cg_delivery_report r;
    CHECK_OK(cg_deliver_webhooks(m, NULL, &r));
    receiver_wait(&rx);
    CHECK(r.sent == 1 && r.failed == 0 && r.dead_lettered == 0 && r.busy == 0);
    CHECK(rx.served == 1);
    received *got = &rx.got[0];
    CHECK_CONTAINS(got->body, "\"type\":\"purchase.first\"");
    CHECK_CONTAINS(got->body, "\"user_id\":\"alice\"");
    char needle[96];
    snprintf(needle, sizeof needle, "\"id\":%s,", got->id); /* webhook-id is the event id */
    CHECK_CONTAINS(got->body, needle);
    CHECK(strncmp(got->signature, "v1,", 3) == 0);

    /* The receiver's check: the body back, parsed and re-serialized. */
    cg_webhook_request req = request_of(got);
    char *event = NULL;
    CHECK_OK(cg_verify_webhook(&req, secret, 0, 0, &event));
    CHECK_CONTAINS(event, "\"type\":\"purchase.first\"");
    CHECK_CONTAINS(event, "\"user_id\":\"alice\"");
    cg_string_free(event);
    int64_t sent_at = strtoll(got->timestamp, NULL, 10) * 1000000;
    CHECK_OK(cg_verify_webhook(&req, secret, 10, sent_at + 10 * 1000000, &event));
    cg_string_free(event);

    /* Tampered, stale, early, wrong secret, missing header. */
    event = (char *)1;
    CHECK_ERR(cg_verify_webhook(&req, secret, 10, sent_at + 11 * 1000000, &event), CG_INVALID_ARGUMENT, "too old");
    CHECK(event == NULL);
    CHECK_ERR(cg_verify_webhook(&req, secret, 10, sent_at - 11 * 1000000, &event), CG_INVALID_ARGUMENT, "too new");
    char tampered[sizeof got->body];
    memcpy(tampered, got->body, got->body_len + 1);
    char *alice = strstr(tampered, "alice");
    if (alice != NULL) alice[0] = 'A';
    cg_webhook_request bad = req;
    bad.payload = (const uint8_t *)tampered;
    CHECK_ERR(cg_verify_webhook(&bad, secret, 0, 0, &event), CG_INVALID_ARGUMENT, "signature mismatch");
    bad = req;
    bad.payload_len = got->body_len - 1;
    CHECK_ERR(cg_verify_webhook(&bad, secret, 0, 0, &event), CG_INVALID_ARGUMENT, "signature mismatch");
    bad = req;
    bad.webhook_id = "999999"; /* another message id */
    CHECK_ERR(cg_verify_webhook(&bad, secret, 0, 0, &event), CG_INVALID_ARGUMENT, "signature mismatch");
    CHECK_ERR(cg_verify_webhook(&req, "whsec_AAAAAAAA", 0, 0, &event), CG_INVALID_ARGUMENT, "signature mismatch");
    CHECK_ERR(cg_verify_webhook(&req, "nope", 0, 0, &event), CG_INVALID_ARGUMENT, "bad secret");
    const char *headers[] = {"webhook-id", "webhook-timestamp", "webhook-signature"};
    for (int i = 0; i < 3; i++) {
        bad = req;
        if (i == 0) bad.webhook_id = NULL;
        if (i == 1) bad.webhook_timestamp = NULL;
        if (i == 2) bad.webhook_signature = NULL;
        char missing[64];
        snprintf(missing, sizeof missing, "missing header %s", headers[i]);
        CHECK_ERR(cg_verify_webhook(&bad, secret, 0, 0, &event), CG_INVALID_ARGUMENT, missing);
        CHECK(event == NULL);
    }
    /* Any one of several signatures passes (a rotation's overlap). */
    char both[512];
    snprintf(both, sizeof both, "v1,Zm9vYmFy %s", got->signature);
    bad = req;
    bad.webhook_signature = both;
    CHECK_OK(cg_verify_webhook(&bad, secret, 0, 0, &event));
    cg_string_free(event);

    /* The subscription's figures. */
    char *json = NULL;
    CHECK_OK(cg_webhooks_json(m, &json));
    CHECK(count_of(json, "\"id\":\"wh_") == 1);
    CHECK_CONTAINS(json, wh.id);
    CHECK_CONTAINS(json, url);
    CHECK_CONTAINS(json, "\"kinds\":[\"purchase.first\"]");
    CHECK_CONTAINS(json, "\"description\":\"billing\"");
    CHECK_CONTAINS(json, "\"enabled\":true");
    CHECK_CONTAINS(json, "\"delivered\":1");
    CHECK_CONTAINS(json, "\"pending\":0");
    CHECK_CONTAINS(json, "\"failed_attempts\":0");
    CHECK_CONTAINS(json, "\"last_error\":null");
    CHECK(strstr(json, "whsec_") == NULL); /* never the secret */
    cg_string_free(json);

    /* Rotation: a new secret; the old one no longer verifies new deliveries. */
    char *rotated = NULL;
    CHECK_OK(cg_rotate_webhook_secret(m, wh.id, &rotated));
    CHECK(rotated != NULL && strncmp(rotated, "whsec_", 6) == 0 && strcmp(rotated, secret) != 0);
    CHECK_ERR(cg_verify_webhook(&req, rotated, 0, 0, &event), CG_INVALID_ARGUMENT, "signature mismatch");
    CHECK_OK(cg_record_payment(m, "bob", "pi_2", 100, "USD", &e));
    receiver_start(&rx, 1, (int[]){200});
    CHECK_OK(cg_deliver_webhooks(m, NULL, &r));
    receiver_wait(&rx);
    CHECK(r.sent == 1 && rx.served == 2);
    req = request_of(&rx.got[1]);
    CHECK_CONTAINS(rx.got[1].body, "\"user_id\":\"bob\"");
    CHECK_OK(cg_verify_webhook(&req, rotated, 0, 0, &event));
    cg_string_free(event);
    CHECK_ERR(cg_verify_webhook(&req, secret, 0, 0, &event), CG_INVALID_ARGUMENT, "signature mismatch");

    /* Nothing new: a pass sends nothing (and connects nowhere). */
    CHECK_OK(cg_deliver_webhooks(m, NULL, &r));
    CHECK(r.sent == 0 && r.failed == 0);
    close(rx.fd);
    cg_string_free(rotated);
    cg_string_free(secret);
    cg_close(m);
}

static void test_failures_dead_letters_and_replay(void) {
    cg_manager *m = open_temp();
    receiver rx;
    receiver_open(&rx);
    char url[128];
    receiver_url(&rx, url, sizeof url);
    char *secret = NULL;
    cg_webhook wh;
    CHECK_OK(cg_create_webhook(m, url, NULL, NULL, &secret, &wh)); /* every kind */
    cg_string_free(secret);
    cg_entry e;
    CHECK_OK(cg_add_credits(m, "alice", CREDITS(5), NULL, NULL, &e)); /* no event */
    CHECK_OK(cg_record_payment(m, "carol", "pi_c", 100, "USD", &e));  /* purchase.first */

    /* One attempt per event, then the dead-letter list. */
    cg_delivery_options o = {.max_attempts = 1, .backoff_base_ms = 1, .backoff_max_ms = 2};
    receiver_start(&rx, 1, (int[]){500});
    cg_delivery_report r = deliver(m, &o);
    receiver_wait(&rx);
    CHECK(r.sent == 0 && r.failed == 1 && r.dead_lettered == 1);
    char *json = NULL;
    CHECK_OK(cg_webhooks_json(m, &json));
    CHECK_CONTAINS(json, "\"kinds\":[]");
    CHECK_CONTAINS(json, "\"failed_attempts\":1");
    CHECK_CONTAINS(json, "\"dead_lettered\":1");
    CHECK_CONTAINS(json, "\"last_error\":\"HTTP 500\"");
    cg_string_free(json);
    CHECK_OK(cg_webhook_dead_letters_json(m, wh.id, 0, &json));
    CHECK(count_of(json, "\"event_id\":") == 1);
    CHECK_CONTAINS(json, "\"kind\":\"purchase.first\"");
    CHECK_CONTAINS(json, "\"requeued\":false");
    CHECK_CONTAINS(json, wh.id);
    char *letters_all = NULL;
    CHECK_OK(cg_webhook_dead_letters_json(m, NULL, CG_MAX_EVENTS_PER_PAGE, &letters_all));
    CHECK(strcmp(json, letters_all) == 0);
    cg_string_free(letters_all);
    int64_t event_id = strtoll(strstr(json, "\"event_id\":") + strlen("\"event_id\":"), NULL, 10);
    cg_string_free(json);
    CHECK(event_id > 0);

    /* Replay: an id that is not a dead letter is skipped; then the one. */
    int64_t n = -1;
    CHECK_OK(cg_replay_dead_letters(m, wh.id, event_id + 1000, &n));
    CHECK_EQ_I64(n, 0);
    CHECK_OK(cg_replay_dead_letters(m, wh.id, event_id, &n));
    CHECK_EQ_I64(n, 1);
    CHECK_OK(cg_webhook_dead_letters_json(m, wh.id, 0, &json));
    CHECK_CONTAINS(json, "\"requeued\":true");
    cg_string_free(json);
    receiver_start(&rx, 1, (int[]){200});
    r = deliver(m, &o);
    receiver_wait(&rx);
    CHECK(r.sent == 1 && r.failed == 0);
    char id[32];
    snprintf(id, sizeof id, "%" PRId64, event_id);
    CHECK(strcmp(rx.got[1].id, id) == 0); /* the same event, again */
    CHECK_OK(cg_webhook_dead_letters_json(m, wh.id, 0, &json));
    CHECK(strcmp(json, "[]") == 0);
    cg_string_free(json);
    CHECK_OK(cg_replay_dead_letters(m, wh.id, 0, &n)); /* 0: all, of none */
    CHECK_EQ_I64(n, 0);

    /* Disabled: nothing is sent; enabled again, it resumes at its cursor. */
    CHECK_OK(cg_set_webhook_enabled(m, wh.id, false));
    CHECK_OK(cg_webhooks_json(m, &json));
    CHECK_CONTAINS(json, "\"enabled\":false");
    cg_string_free(json);
    CHECK_OK(cg_record_payment(m, "dave", "pi_d", 100, "USD", &e));
    CHECK_OK(cg_deliver_webhooks(m, &o, &r));
    CHECK(r.sent == 0 && r.failed == 0 && rx.served == 2);
    CHECK_OK(cg_set_webhook_enabled(m, wh.id, true));
    receiver_start(&rx, 1, (int[]){204});
    r = deliver(m, &o);
    receiver_wait(&rx);
    CHECK(r.sent == 1);
    CHECK_CONTAINS(rx.got[2].body, "\"user_id\":\"dave\"");

    /* Deleted: gone, with its dead letters. */
    CHECK_OK(cg_delete_webhook(m, wh.id));
    CHECK_ERR(cg_delete_webhook(m, wh.id), CG_NOT_FOUND, wh.id);
    CHECK_ERR(cg_set_webhook_enabled(m, wh.id, true), CG_NOT_FOUND, wh.id);
    CHECK_ERR(cg_replay_dead_letters(m, wh.id, 0, &n), CG_NOT_FOUND, wh.id);
    CHECK_EQ_I64(n, 0);
    CHECK_ERR(cg_webhook_dead_letters_json(m, wh.id, 0, &json), CG_NOT_FOUND, wh.id);
    CHECK(json == NULL);
    CHECK_ERR(cg_rotate_webhook_secret(m, wh.id, &json), CG_NOT_FOUND, wh.id);
    CHECK(json == NULL);
    CHECK_OK(cg_webhooks_json(m, &json));
    CHECK(strcmp(json, "[]") == 0);
    cg_string_free(json);
    close(rx.fd);
    cg_close(m);
}

static void test_webhook_rules(void) {
    CHECK(CG_MAX_WEBHOOKS == 100 && CG_MAX_WEBHOOK_URL_LEN == 2048);
    CHECK(CG_DEFAULT_WEBHOOK_TIMEOUT_MS == 10000 && CG_MAX_WEBHOOK_TIMEOUT_MS == 60000);
    CHECK(CG_DEFAULT_WEBHOOK_MAX_ATTEMPTS == 12 && CG_MAX_WEBHOOK_MAX_ATTEMPTS == 50);
    CHECK(CG_DEFAULT_WEBHOOK_BACKOFF_BASE_MS == 10000 && CG_DEFAULT_WEBHOOK_BACKOFF_MAX_MS == 3600000);
    CHECK(CG_MAX_WEBHOOK_BACKOFF_MS == 86400000);
    CHECK(CG_DEFAULT_WEBHOOK_BATCH_SIZE == 100 && CG_MAX_WEBHOOK_BATCH_SIZE == 1000);
    CHECK(CG_DEFAULT_WEBHOOK_TOLERANCE_SECONDS == 300);
    cg_manager *m = open_temp();
    char *secret = (char *)1;
    cg_webhook wh;
    memset(&wh, 0xA5, sizeof wh);
    /* Internal addresses not allow-listed, other schemes, unknown kinds. */
    CHECK_ERR(cg_create_webhook(m, "http://10.1.2.3/x", NULL, NULL, &secret, &wh), CG_INVALID_ARGUMENT, "10.1.2.3");
    CHECK(secret == NULL && wh.id[0] == '\0');
    CHECK_ERR(cg_create_webhook(m, "http://[::1]:9/x", NULL, NULL, &secret, &wh), CG_INVALID_ARGUMENT, "");
    CHECK_ERR(cg_create_webhook(m, "ftp://127.0.0.1/x", NULL, NULL, &secret, &wh), CG_INVALID_ARGUMENT, "");
    CHECK_ERR(cg_create_webhook(m, "not a url", NULL, NULL, &secret, &wh), CG_INVALID_ARGUMENT, "");
    CHECK_ERR(cg_create_webhook(m, "http://127.0.0.1:9/x", "balance.low,nope", NULL, &secret, &wh),
              CG_INVALID_ARGUMENT, "balance.low, purchase.first");
    CHECK_ERR(cg_create_webhook(m, "http://127.0.0.1:9/x", "balance.low,", NULL, &secret, &wh), CG_INVALID_ARGUMENT,
              "unknown event kind");
    char long_url[CG_MAX_WEBHOOK_URL_LEN + 64];
    snprintf(long_url, sizeof long_url, "http://127.0.0.1:9/%0*d", (int)CG_MAX_WEBHOOK_URL_LEN, 0);
    CHECK_ERR(cg_create_webhook(m, long_url, NULL, NULL, &secret, &wh), CG_INVALID_ARGUMENT, "");
    CHECK(secret == NULL);
    /* Kinds with spaces around the names are fine. */
    CHECK_OK(cg_create_webhook(m, "http://127.0.0.1:9/x", " balance.low , topup.requested ", NULL, &secret, &wh));
    cg_string_free(secret);
    char *json = NULL;
    CHECK_OK(cg_webhooks_json(m, &json));
    CHECK_CONTAINS(json, "\"balance.low\"");
    CHECK_CONTAINS(json, "\"topup.requested\"");
    CHECK_CONTAINS(json, "\"description\":null");
    cg_string_free(json);

    /* Delivery options out of range. */
    cg_delivery_report r;
    struct {
        cg_delivery_options o;
        const char *needle;
    } bad[] = {
        {{.timeout_ms = CG_MAX_WEBHOOK_TIMEOUT_MS + 1}, "timeout_ms"},
        {{.max_attempts = CG_MAX_WEBHOOK_MAX_ATTEMPTS + 1}, "max_attempts"},
        {{.backoff_base_ms = CG_MAX_WEBHOOK_BACKOFF_MS + 1}, "backoff_base_ms"},
        {{.backoff_base_ms = 100, .backoff_max_ms = 99}, "backoff_max_ms"},
        {{.backoff_max_ms = CG_MAX_WEBHOOK_BACKOFF_MS + 1}, "backoff_max_ms"},
        {{.batch_size = CG_MAX_WEBHOOK_BATCH_SIZE + 1}, "batch_size"},
        {{.batch_size = UINT32_MAX}, "batch_size"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&r, 0xA5, sizeof r);
        CHECK_ERR(cg_deliver_webhooks(m, &bad[i].o, &r), CG_INVALID_ARGUMENT, bad[i].needle);
        CHECK(r.sent == 0 && r.failed == 0 && r.dead_lettered == 0 && r.busy == 0);
    }
    const int64_t limits[] = {INT64_MIN, -1, CG_MAX_EVENTS_PER_PAGE + 1, 4294967296LL, INT64_MAX};
    for (size_t i = 0; i < sizeof limits / sizeof *limits; i++) {
        json = (char *)1;
        CHECK_ERR(cg_webhook_dead_letters_json(m, NULL, limits[i], &json), CG_INVALID_ARGUMENT, "limit");
        CHECK(json == NULL);
    }
    CHECK_ERR(cg_set_webhook_enabled(m, "wh_nope", true), CG_NOT_FOUND, "wh_nope");
    CHECK_ERR(cg_webhook_dead_letters_json(m, "wh_nope", 0, &json), CG_NOT_FOUND, "wh_nope");
    cg_close(m);

    /* Without CREDITGATE_WEBHOOK_KEY: fail closed. */
    unsetenv("CREDITGATE_WEBHOOK_KEY");
    m = open_temp();
    setenv("CREDITGATE_WEBHOOK_KEY", KEY_HEX, 1);
    CHECK_ERR(cg_create_webhook(m, "http://127.0.0.1:9/x", NULL, NULL, &secret, &wh), CG_INVALID_ARGUMENT,
              "CREDITGATE_WEBHOOK_KEY");
    CHECK(secret == NULL);
    CHECK_ERR(cg_deliver_webhooks(m, NULL, &r), CG_INVALID_ARGUMENT, "CREDITGATE_WEBHOOK_KEY");
    CHECK_ERR(cg_rotate_webhook_secret(m, "wh_nope", &secret), CG_INVALID_ARGUMENT, "CREDITGATE_WEBHOOK_KEY");
    CHECK_OK(cg_webhooks_json(m, &json)); /* listing needs no key */
    CHECK(strcmp(json, "[]") == 0);
    cg_string_free(json);
    cg_close(m);
}

/* NULL for every pointer of every new function, and invalid UTF-8 in each
 * string: CG_INVALID_ARGUMENT, out-pointers reset, nothing written. */
static void test_webhook_bad_input(void) {
    cg_manager *m = open_temp();
    const cg_status inv = CG_INVALID_ARGUMENT;
    char *s;
    int64_t n;
    cg_webhook wh;
    cg_delivery_report r;
    const char *url = "http://127.0.0.1:9/x";
    for (int v = 0; v < 2; v++) {
        const char *x = v == 0 ? NULL : BAD_UTF8;
        s = (char *)&n;
        memset(&wh, 0xA5, sizeof wh);
        CHECK_STATUS(cg_create_webhook(m, x, NULL, NULL, &s, &wh), inv);
        CHECK(s == NULL && wh.id[0] == '\0');
        CHECK_STATUS(cg_set_webhook_enabled(m, x, true), inv);
        CHECK_STATUS(cg_delete_webhook(m, x), inv);
        s = (char *)&n;
        CHECK_STATUS(cg_rotate_webhook_secret(m, x, &s), inv);
        CHECK(s == NULL);
        n = 42;
        CHECK_STATUS(cg_replay_dead_letters(m, x, 0, &n), inv);
        CHECK_EQ_I64(n, 0);
        s = (char *)&n;
        CHECK_STATUS(cg_verify_webhook(&(cg_webhook_request){0}, x, 0, 0, &s), inv);
        CHECK(s == NULL);
    }
    /* Optional strings: invalid UTF-8 is refused, NULL is "not given". */
    CHECK_ERR(cg_create_webhook(m, url, BAD_UTF8, NULL, &s, &wh), inv, "kinds");
    CHECK_ERR(cg_create_webhook(m, url, NULL, BAD_UTF8, &s, &wh), inv, "description");
    CHECK_ERR(cg_webhook_dead_letters_json(m, BAD_UTF8, 0, &s), inv, "webhook_id");
    CHECK(s == NULL);
    const char *dot = "1";
    cg_webhook_request bad_id = {.webhook_id = BAD_UTF8, .webhook_timestamp = dot, .webhook_signature = dot};
    CHECK_ERR(cg_verify_webhook(&bad_id, "whsec_AAAA", 0, 0, &s), inv, "webhook_id");
    cg_webhook_request bad_ts = {.webhook_id = dot, .webhook_timestamp = BAD_UTF8, .webhook_signature = dot};
    CHECK_ERR(cg_verify_webhook(&bad_ts, "whsec_AAAA", 0, 0, &s), inv, "webhook_timestamp");
    cg_webhook_request bad_sig = {.webhook_id = dot, .webhook_timestamp = dot, .webhook_signature = BAD_UTF8};
    CHECK_ERR(cg_verify_webhook(&bad_sig, "whsec_AAAA", 0, 0, &s), inv, "webhook_signature");
    cg_webhook_request no_payload = {.payload = NULL, .payload_len = 3};
    CHECK_ERR(cg_verify_webhook(&no_payload, "whsec_AAAA", 0, 0, &s), inv, "payload is NULL");
    cg_webhook_request huge = {.payload = (const uint8_t *)"x", .payload_len = SIZE_MAX};
    CHECK_ERR(cg_verify_webhook(&huge, "whsec_AAAA", 0, 0, &s), inv, "larger than any buffer");
    CHECK_ERR(cg_verify_webhook(&(cg_webhook_request){0}, "whsec_AAAA", 0, 0, &s), inv, "missing header webhook-id");
    /* NULL handles, requests and out-pointers. */
    s = (char *)&n;
    CHECK_ERR(cg_create_webhook(NULL, url, NULL, NULL, &s, &wh), inv, "manager is NULL");
    CHECK(s == NULL);
    CHECK_ERR(cg_create_webhook(m, url, NULL, NULL, NULL, &wh), inv, "secret_out is NULL");
    CHECK_ERR(cg_create_webhook(m, url, NULL, NULL, &s, NULL), inv, "webhook_out is NULL");
    CHECK_ERR(cg_webhooks_json(NULL, &s), inv, "manager is NULL");
    CHECK_ERR(cg_webhooks_json(m, NULL), inv, "json_out is NULL");
    CHECK_ERR(cg_set_webhook_enabled(NULL, "wh_x", true), inv, "manager is NULL");
    CHECK_ERR(cg_delete_webhook(NULL, "wh_x"), inv, "manager is NULL");
    CHECK_ERR(cg_rotate_webhook_secret(NULL, "wh_x", &s), inv, "manager is NULL");
    CHECK_ERR(cg_rotate_webhook_secret(m, "wh_x", NULL), inv, "secret_out is NULL");
    CHECK_ERR(cg_webhook_dead_letters_json(NULL, NULL, 0, &s), inv, "manager is NULL");
    CHECK_ERR(cg_webhook_dead_letters_json(m, NULL, 0, NULL), inv, "json_out is NULL");
    CHECK_ERR(cg_replay_dead_letters(NULL, "wh_x", 0, &n), inv, "manager is NULL");
    CHECK_ERR(cg_replay_dead_letters(m, "wh_x", 0, NULL), inv, "replayed_out is NULL");
    memset(&r, 0xA5, sizeof r);
    CHECK_ERR(cg_deliver_webhooks(NULL, NULL, &r), inv, "manager is NULL");
    CHECK(r.sent == 0 && r.busy == 0);
    CHECK_ERR(cg_deliver_webhooks(m, NULL, NULL), inv, "report_out is NULL");
    CHECK_ERR(cg_verify_webhook(NULL, "whsec_AAAA", 0, 0, &s), inv, "request is NULL");
    CHECK(s == NULL);
    CHECK_ERR(cg_verify_webhook(&(cg_webhook_request){0}, "whsec_AAAA", 0, 0, NULL), inv, "json_out is NULL");
    /* Nothing was written. */
    CHECK_OK(cg_webhooks_json(m, &s));
    CHECK(strcmp(s, "[]") == 0);
    cg_string_free(s);
    CHECK_OK(cg_webhook_dead_letters_json(m, NULL, 0, &s));
    CHECK(strcmp(s, "[]") == 0);
    cg_string_free(s);
    cg_close(m);
}

int main(void) {
    harness_env();
    setenv("CREDITGATE_WEBHOOK_KEY", KEY_HEX, 1);
    setenv("CREDITGATE_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1", 1);
    RUN(test_deliver_and_verify);
    RUN(test_failures_dead_letters_and_replay);
    RUN(test_webhook_rules);
    RUN(test_webhook_bad_input);
    remove_temp_dbs();
    return harness_summary("test_webhooks");
}
