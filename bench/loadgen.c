/* Load generator for the echo benchmark: epoll, many connections, one thread.
 *
 * Built by bench/echo.py with the system C compiler into build/bench/ (untracked).
 *
 *   loadgen port=P pid=SERVER_PID mode=echo conns=100 size=64 batch=1 idle=0
 *           warmup=0.5 duration=2 inflight=256
 *   loadgen port=P pid=SERVER_PID mode=accept conns=10000 size=64 inflight=256
 *
 * Every connection carries a deterministic byte stream of `size`-byte lines (the
 * last byte '\n'); every byte echoed back is compared with the byte sent at that
 * position, so a server that loses, reorders or corrupts data fails the run.
 *
 * echo: connections are opened (at most `inflight` unanswered at a time), each
 * proves the server accepted it with one line echoed back, `idle` of them then stay
 * silent; the `conns` active ones each write `batch` lines in one write and wait
 * for all of them to come back before the next write. After `warmup` seconds the
 * measured window of `duration` seconds starts: the server's CPU time (the sum of
 * its threads' sum_exec_runtime from /proc/PID/task/T/schedstat, the kernel's own
 * accounting) is read at both ends, every batch completed in the window counts
 * its lines and its round-trip time. Then the in-flight batches are drained and
 * checked.
 *
 * accept: `conns` connections are opened as fast as the server answers (at most
 * `inflight` unanswered), each answered by one echoed line and kept open; the
 * window runs from the first connect to the last answer.
 *
 * messages=N ends the window after N lines instead of after `duration`.
 *
 * Prints one JSON object on stdout; exits 1 with a message on stderr on any error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum state { CONNECTING, HANDSHAKE, UP, CLOSED };

typedef struct {
    int fd;
    int state;
    uint64_t sent;   /* stream bytes written */
    uint64_t target; /* stream bytes scheduled to be written */
    uint64_t recvd;  /* stream bytes received and checked */
    double t_batch;  /* when the current batch was scheduled */
    uint32_t out_armed;
} conn_t;

static int opt_port, opt_pid, opt_conns = 100, opt_size = 64, opt_batch = 1, opt_idle = 0;
static int opt_inflight = 256;
static long opt_messages; /* when set: the window ends after this many lines */
static double opt_warmup = 0.5, opt_duration = 2.0, opt_timeout = 60.0;
static const char *opt_mode = "echo";

static conn_t *conns;
static int nconns, epfd;
static char pattern[64 + 70000];
static char scratch[1 << 18];
static char rbuf[1 << 18];
static double *lat;
static size_t nlat, caplat;
static uint64_t window_lines;
static int measuring;
static double user0, sys0, user1, sys1;

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The kernel's count of CPU time of every thread of the server, in seconds. */
static double server_cpu(void) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/task", opt_pid);
    DIR *d = opendir(path);
    if (!d) die("cannot read %s: %s", path, strerror(errno));
    double total = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[300];
        snprintf(p, sizeof p, "/proc/%d/task/%s/schedstat", opt_pid, e->d_name);
        FILE *f = fopen(p, "r");
        if (!f) continue; /* a thread that just ended */
        unsigned long long ns = 0;
        if (fgets(line, sizeof line, f)) ns = strtoull(line, NULL, 10);
        fclose(f);
        total += ns * 1e-9;
    }
    closedir(d);
    return total;
}

/* The server's user and system time (clock ticks, from /proc/PID/stat): the split only. */
static void server_times(double *user, double *sys) {
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", opt_pid);
    FILE *f = fopen(path, "r");
    if (!f) die("cannot read %s: %s", path, strerror(errno));
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        die("cannot parse %s", path);
    double tick = sysconf(_SC_CLK_TCK);
    *user = ut / tick, *sys = st / tick;
}

static long server_status_kb(const char *key) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", opt_pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, klen) && line[klen] == ':') kb = strtol(line + klen + 1, NULL, 10);
    fclose(f);
    return kb;
}

static double self_cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

/* Stream byte at position pos of connection c: line m = pos / size is the pattern
 * shifted by (m + c) % 26, its last byte '\n'. */
static void fill(int c, uint64_t pos, char *buf, size_t n) {
    while (n) {
        uint64_t m = pos / opt_size, r = pos % opt_size;
        size_t body = opt_size - 1 - r, take;
        if (body) {
            take = body < n ? body : n;
            memcpy(buf, pattern + (m + c) % 26 + r, take);
        } else {
            take = 1;
            *buf = '\n';
        }
        buf += take, pos += take, n -= take;
    }
}

static void check(int c, uint64_t pos, const char *buf, size_t n) {
    while (n) {
        size_t take = n < sizeof scratch ? n : sizeof scratch;
        fill(c, pos, scratch, take);
        if (memcmp(scratch, buf, take)) {
            size_t i = 0;
            while (scratch[i] == buf[i]) i++;
            die("connection %d: byte %llu echoed as 0x%02x, sent 0x%02x", c,
                (unsigned long long)(pos + i), (unsigned char)buf[i], (unsigned char)scratch[i]);
        }
        buf += take, pos += take, n -= take;
    }
}

static void arm(int c, int want_out) {
    if (conns[c].out_armed == (uint32_t)want_out) return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.u32 = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, conns[c].fd, &ev)) die("epoll_ctl: %s", strerror(errno));
    conns[c].out_armed = want_out;
}

static void flush(int c) {
    conn_t *k = &conns[c];
    while (k->sent < k->target) {
        size_t n = k->target - k->sent;
        if (n > sizeof scratch) n = sizeof scratch;
        fill(c, k->sent, scratch, n);
        ssize_t w = send(k->fd, scratch, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN) break;
            die("connection %d: send: %s", c, strerror(errno));
        }
        k->sent += w;
    }
    arm(c, k->sent < k->target);
}

static void start_batch(int c, int lines, double t) {
    conns[c].target += (uint64_t)lines * opt_size;
    conns[c].t_batch = t;
    flush(c);
}

static int open_conn(int c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket: %s (connection %d)", strerror(errno), c);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(opt_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) && errno != EINPROGRESS)
        die("connect: %s (connection %d)", strerror(errno), c);
    conns[c] = (conn_t){.fd = fd, .state = CONNECTING, .out_armed = 1};
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev)) die("epoll_ctl: %s", strerror(errno));
    return fd;
}

static void record(double rtt) {
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 1 << 16;
        lat = realloc(lat, caplat * sizeof *lat);
        if (!lat) die("out of memory");
    }
    lat[nlat++] = rtt;
}

/* One event on connection c. Returns 1 when its pending batch (or handshake) completed. */
static int on_event(int c, uint32_t events, double *t) {
    conn_t *k = &conns[c];
    if (k->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) die("connection %d: connect: %s", c, strerror(err));
        if (!(events & (EPOLLOUT | EPOLLIN))) return 0;
        k->state = HANDSHAKE;
        start_batch(c, 1, k->t_batch);
        return 0;
    }
    if (events & EPOLLOUT) flush(c);
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return 0;
    ssize_t n = recv(k->fd, rbuf, sizeof rbuf, 0);
    if (n == 0) die("connection %d: closed by the server after %llu bytes", c,
                    (unsigned long long)k->recvd);
    if (n < 0) {
        if (errno == EAGAIN) return 0;
        die("connection %d: recv: %s", c, strerror(errno));
    }
    if (k->recvd + n > k->sent) die("connection %d: more bytes echoed than sent", c);
    check(c, k->recvd, rbuf, n);
    k->recvd += n;
    if (k->recvd < k->target) return 0;
    *t = now();
    return 1;
}

static double percentile(double p) {
    if (!nlat) return 0;
    size_t i = (size_t)(p * (nlat - 1) + 0.5);
    return lat[i];
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Open conns[first..last), each answered once, at most opt_inflight unanswered. */
static void open_all(int first, int last, int record_latency) {
    struct epoll_event evs[512];
    int next = first, pending = 0, up = 0;
    double deadline = now() + opt_timeout;
    while (up < last - first) {
        while (next < last && pending < opt_inflight) {
            open_conn(next);
            conns[next].t_batch = now();
            next++, pending++;
        }
        int n = epoll_wait(epfd, evs, 512, 100);
        if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            int c = evs[i].data.u32;
            double t;
            if (on_event(c, evs[i].events, &t) && conns[c].state == HANDSHAKE) {
                conns[c].state = UP;
                if (record_latency) record(t - conns[c].t_batch);
                pending--, up++;
            }
        }
        if (now() > deadline)
            die("only %d of %d connections answered within %.0f s", up, last - first,
                opt_timeout);
    }
}

static void print_result(double seconds, double cpu, double client_cpu, uint64_t lines,
                         double setup) {
    qsort(lat, nlat, sizeof *lat, cmp_double);
    printf("{\"mode\": \"%s\", \"seconds\": %.6f, \"messages\": %llu, \"server_cpu_s\": %.6f, "
           "\"client_cpu_s\": %.6f, \"samples\": %zu, \"p50_us\": %.2f, \"p99_us\": %.2f, "
           "\"server_user_s\": %.2f, \"server_sys_s\": %.2f, "
           "\"server_rss_kb\": %ld, \"server_hwm_kb\": %ld, \"setup_s\": %.3f}\n",
           opt_mode, seconds, (unsigned long long)lines, cpu, client_cpu, nlat,
           percentile(0.5) * 1e6, percentile(0.99) * 1e6, user1 - user0, sys1 - sys0,
           server_status_kb("VmRSS"),
           server_status_kb("VmHWM"), setup);
}

static void run_accept(void) {
    nconns = opt_conns;
    server_times(&user0, &sys0);
    double cpu0 = server_cpu(), me0 = self_cpu(), t0 = now();
    open_all(0, nconns, 1);
    double t1 = now(), cpu1 = server_cpu(), me1 = self_cpu();
    server_times(&user1, &sys1);
    print_result(t1 - t0, cpu1 - cpu0, me1 - me0, nconns, 0);
}

static void run_echo(void) {
    nconns = opt_idle + opt_conns;
    double s0 = now();
    open_all(0, opt_idle, 0);
    open_all(opt_idle, nconns, 0);
    double setup = now() - s0;
    struct epoll_event evs[512];
    double t = now(), t_measure = t + opt_warmup, t_end = 0, cpu0 = 0, me0 = 0;
    double cpu1 = 0, me1 = 0;
    for (int c = opt_idle; c < nconns; c++) start_batch(c, opt_batch, t);
    int outstanding = opt_conns, stopping = 0;
    double deadline = 0;
    while (outstanding) {
        int n = epoll_wait(epfd, evs, 512, 10);
        if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            int c = evs[i].data.u32;
            double tc;
            if (!on_event(c, evs[i].events, &tc)) continue;
            if (c < opt_idle) die("idle connection %d got unexpected data", c);
            if (measuring) {
                record(tc - conns[c].t_batch);
                window_lines += opt_batch;
            }
            if (stopping)
                outstanding--;
            else
                start_batch(c, opt_batch, tc);
        }
        t = now();
        if (!measuring && !stopping && t >= t_measure) {
            measuring = 1;
            server_times(&user0, &sys0);
            cpu0 = server_cpu(), me0 = self_cpu();
            t_measure = now();
            t_end = t_measure + opt_duration;
        } else if (measuring && (opt_messages ? (long)window_lines >= opt_messages : t >= t_end)) {
            measuring = 0, stopping = 1;
            cpu1 = server_cpu(), me1 = self_cpu();
            server_times(&user1, &sys1);
            t_end = now();
            deadline = t_end + opt_timeout;
        } else if (stopping && t > deadline) {
            die("%d connections did not complete their last batch", outstanding);
        }
    }
    print_result(t_end - t_measure, cpu1 - cpu0, me1 - me0, window_lines, setup);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) die("argument %s is not key=value", argv[i]);
        *eq = 0;
        const char *k = argv[i], *v = eq + 1;
        if (!strcmp(k, "port")) opt_port = atoi(v);
        else if (!strcmp(k, "pid")) opt_pid = atoi(v);
        else if (!strcmp(k, "mode")) opt_mode = v;
        else if (!strcmp(k, "conns")) opt_conns = atoi(v);
        else if (!strcmp(k, "idle")) opt_idle = atoi(v);
        else if (!strcmp(k, "size")) opt_size = atoi(v);
        else if (!strcmp(k, "batch")) opt_batch = atoi(v);
        else if (!strcmp(k, "inflight")) opt_inflight = atoi(v);
        else if (!strcmp(k, "warmup")) opt_warmup = atof(v);
        else if (!strcmp(k, "duration")) opt_duration = atof(v);
        else if (!strcmp(k, "timeout")) opt_timeout = atof(v);
        else if (!strcmp(k, "messages")) opt_messages = atol(v);
        else die("unknown option %s", k);
    }
    if (!opt_port || !opt_pid) die("port= and pid= are required");
    if (opt_size < 2 || opt_size > 65536) die("size must be 2..65536");
    if (opt_batch < 1 || (size_t)opt_batch * opt_size > sizeof scratch * 16) die("batch too big");
    for (size_t i = 0; i < sizeof pattern; i++) pattern[i] = 'A' + i % 26;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    int total = opt_idle + opt_conns;
    if ((rlim_t)total + 16 > rl.rlim_cur)
        die("%d connections need more fds than the limit %llu", total,
            (unsigned long long)rl.rlim_cur);
    conns = calloc(total, sizeof *conns);
    epfd = epoll_create1(0);
    if (!conns || epfd < 0) die("setup failed");
    if (!strcmp(opt_mode, "accept"))
        run_accept();
    else if (!strcmp(opt_mode, "echo"))
        run_echo();
    else
        die("unknown mode %s", opt_mode);
    return 0;
}
