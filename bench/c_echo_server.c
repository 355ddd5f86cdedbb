/* A line-echo server in plain C: the echo benchmark's floor.
 *
 * Built by bench/echo.py with the system C compiler into build/bench/ (untracked).
 *
 *   c_echo_server [--backlog N]        (default 1024)
 *
 * Listens on 127.0.0.1, port 0 (the kernel picks it), prints "PORT <n>" on stdout
 * once listening, then serves until killed. The protocol is bench/echo_server.py's:
 * every complete line (terminated by '\n') a connection sends is echoed back; a
 * partial line waits for the rest.
 *
 * One thread, non-blocking sockets, level-triggered epoll. Each readable event is
 * one recv() into a shared buffer; all the complete lines it holds leave in one
 * send(), straight from that buffer when the connection has nothing older queued.
 * What the kernel does not take is queued on the connection and EPOLLOUT is
 * watched only while something is queued; past a high-water mark the connection
 * is not read until its peer catches up. The bytes after the last '\n' are kept
 * for the next read. A connection is closed on EOF or error (dropping any output
 * still queued). Connections get TCP_NODELAY, as in every server of the bench.
 * Out of file descriptors, a pending connection is accepted and closed with a
 * spare descriptor kept for that (else level-triggered epoll would spin on it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_SIZE 65536          /* one recv() per readable event, like the Python servers */
#define HIGH_WATER (1 << 20)     /* queued output past which a connection is not read */
#define MAX_EVENTS 1024

/* A growable byte buffer; data[off..len) holds the bytes. */
typedef struct {
    char *data;
    size_t off, len, cap;
} buf_t;

typedef struct {
    int fd;
    uint32_t events;  /* the epoll events registered for fd */
    buf_t in;         /* the partial line after the last '\n' read */
    buf_t out;        /* output the kernel has not taken yet */
} conn_t;

static int epfd;
static int spare_fd = -1;        /* given up to accept() and close() a connection at EMFILE */
static char rbuf[READ_SIZE];     /* every recv() lands here */

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* Append n bytes to b, compacting or growing it as needed. */
static void buf_append(buf_t *b, const char *p, size_t n) {
    if (b->len + n > b->cap && b->off) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        char *data = realloc(b->data, cap);
        if (!data) die("realloc");
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static size_t buf_size(const buf_t *b) { return b->len - b->off; }

/* Register the events c needs now: input unless too much output is queued,
 * EPOLLOUT only while output is queued. One epoll_ctl() when they change. */
static void update_events(conn_t *c) {
    size_t queued = buf_size(&c->out);
    uint32_t want = (queued < HIGH_WATER ? EPOLLIN : 0) | (queued ? EPOLLOUT : 0);
    if (want == c->events) return;
    struct epoll_event ev = {.events = want, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev)) die("epoll_ctl");
    c->events = want;
}

static void close_conn(conn_t *c) {
    close(c->fd);  /* also removes it from the epoll set */
    free(c->in.data);
    free(c->out.data);
    free(c);
}

/* Send as much of the queued output as the kernel takes. Returns -1 on error. */
static int flush_out(conn_t *c) {
    buf_t *b = &c->out;
    while (b->off < b->len) {
        ssize_t w = send(c->fd, b->data + b->off, b->len - b->off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            return -1;
        }
        b->off += w;
    }
    if (b->off == b->len) b->off = b->len = 0;  /* keep the allocation for the next time */
    return 0;
}

/* Echo n bytes of complete lines: one send() when nothing older is queued, the
 * rest queued. Returns -1 on error. */
static int echo(conn_t *c, const char *p, size_t n) {
    if (buf_size(&c->out) == 0) {
        ssize_t w;
        do
            w = send(c->fd, p, n, MSG_NOSIGNAL);
        while (w < 0 && errno == EINTR);
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
            w = 0;
        }
        p += w, n -= w;
    }
    if (n) buf_append(&c->out, p, n);
    return 0;
}

/* One readable event: one recv(), the complete lines echoed. Returns -1 when
 * the connection is to be closed (EOF or error). */
static int on_readable(conn_t *c) {
    ssize_t n = recv(c->fd, rbuf, sizeof rbuf, 0);
    if (n == 0) return -1;
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    char *nl = memrchr(rbuf, '\n', n);
    if (!nl) {  /* no line ends here: all of it waits */
        buf_append(&c->in, rbuf, n);
        return 0;
    }
    size_t lines = nl + 1 - rbuf;
    int rc;
    if (buf_size(&c->in) == 0) {
        rc = echo(c, rbuf, lines);  /* the common case: no copy */
    } else {                        /* the first line began in an earlier read */
        buf_append(&c->in, rbuf, lines);
        rc = echo(c, c->in.data + c->in.off, buf_size(&c->in));
        c->in.off = c->in.len = 0;
    }
    if (lines < (size_t)n) buf_append(&c->in, rbuf + lines, n - lines);
    return rc;
}

static void on_conn_event(conn_t *c, uint32_t events) {
    /* HUP (the peer is gone) goes to recv(), which reports the EOF or the error. */
    int failed = (events & EPOLLERR) || ((events & EPOLLOUT) && flush_out(c)) ||
                 ((events & (EPOLLIN | EPOLLHUP)) && on_readable(c));
    if (failed)
        close_conn(c);
    else
        update_events(c);
}

/* Accept every pending connection. */
static void on_listener(int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            if (errno == EMFILE || errno == ENFILE) {
                /* Out of fds. A connection left pending would wake level-triggered
                 * epoll forever: give up the spare fd to accept and close it. */
                static int warned;
                if (!warned) {  /* once: nobody reads stderr before the server ends */
                    fprintf(stderr, "c_echo_server: out of file descriptors, refusing\n");
                    warned = 1;
                }
                if (spare_fd < 0) return;
                close(spare_fd);
                fd = accept(lfd, NULL, NULL);
                if (fd >= 0) close(fd);
                spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (fd < 0) return;  /* EMFILE comes before the queue is looked at */
                continue;
            }
            die("accept4");
        }
        int one = 1;  /* no run waits on Nagle's algorithm */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_t *c = calloc(1, sizeof *c);
        if (!c) die("calloc");
        c->fd = fd;
        c->events = EPOLLIN;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev)) die("epoll_ctl");
    }
}

/* Raise the soft fd limit to the hard one: the bench holds 10,000+ connections. */
static void raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);  /* failure only leaves the lower limit */
    }
}

int main(int argc, char **argv) {
    int backlog = 1024;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--backlog") && i + 1 < argc) {
            backlog = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--backlog N]\n", argv[0]);
            return 2;
        }
    }
    raise_fd_limit();
    spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa)) die("bind");
    if (listen(lfd, backlog)) die("listen");
    socklen_t len = sizeof sa;
    if (getsockname(lfd, (struct sockaddr *)&sa, &len)) die("getsockname");

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");
    /* The listener's data.ptr is NULL; every connection's is its conn_t. */
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev)) die("epoll_ctl");

    printf("PORT %d\n", ntohs(sa.sin_port));
    fflush(stdout);

    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL)
                on_listener(lfd);
            else
                on_conn_event(evs[i].data.ptr, evs[i].events);
        }
    }
}
