/* Platform differences, kept out of the Cython sources.
 *
 * Every backend's functions exist on every platform: where the kernel lacks
 * one, its functions fail with ENOSYS, so core.pyx compiles unchanged and
 * simply never picks that backend (uvloop's compat.h does the same).
 */
#ifndef FASTCORE_COMPAT_H
#define FASTCORE_COMPAT_H

#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#ifndef FASTCORE_DEBUG
#define FASTCORE_DEBUG 0
#endif

/* poll(2) bits are the core's event vocabulary; epoll uses the same values. */
#define FC_IN POLLIN
#define FC_PRI POLLPRI
#define FC_OUT POLLOUT
#define FC_ERR POLLERR
#define FC_HUP POLLHUP
#define FC_NVAL POLLNVAL

typedef struct {
    int fd;
    int flags;
} fc_event;

/* ---- epoll (Linux) ---------------------------------------------------- */
#if defined(__linux__)
#include <sys/epoll.h>
#define FC_HAVE_EPOLL 1

static int fc_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

static int fc_epoll_ctl(int ep, int op, int fd, int mask)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = (uint32_t)mask;
    ev.data.fd = fd;
    return epoll_ctl(ep, op, fd, &ev);
}

#define FC_EPOLL_ADD EPOLL_CTL_ADD
#define FC_EPOLL_MOD EPOLL_CTL_MOD
#define FC_EPOLL_DEL EPOLL_CTL_DEL

/* Waits and copies the result into out[]; returns the count or -1. */
static int fc_epoll_wait(int ep, fc_event *out, int maxevents, int timeout_ms)
{
    struct epoll_event evs[256];
    int n, i;
    if (maxevents > 256)
        maxevents = 256;
    n = epoll_wait(ep, evs, maxevents, timeout_ms);
    for (i = 0; i < n; i++) {
        out[i].fd = evs[i].data.fd;
        out[i].flags = (int)(evs[i].events & (EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLERR | EPOLLHUP));
    }
    return n;
}
#else
#define FC_HAVE_EPOLL 0
#define FC_EPOLL_ADD 1
#define FC_EPOLL_MOD 2
#define FC_EPOLL_DEL 3
static int fc_epoll_create(void) { errno = ENOSYS; return -1; }
static int fc_epoll_ctl(int ep, int op, int fd, int mask)
{
    (void)ep; (void)op; (void)fd; (void)mask;
    errno = ENOSYS;
    return -1;
}
static int fc_epoll_wait(int ep, fc_event *out, int maxevents, int timeout_ms)
{
    (void)ep; (void)out; (void)maxevents; (void)timeout_ms;
    errno = ENOSYS;
    return -1;
}
#endif

/* ---- kqueue (macOS, BSD) ---------------------------------------------- */
#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || \
    defined(__NetBSD__) || defined(__DragonFly__)
#include <sys/event.h>
#define FC_HAVE_KQUEUE 1

static int fc_kqueue_create(void)
{
    int kq = kqueue();
    if (kq >= 0)
        (void)fcntl(kq, F_SETFD, FD_CLOEXEC);
    return kq;
}

/* Moves fd from interest old_mask to new_mask (FC_IN / FC_OUT bits). */
static int fc_kqueue_set(int kq, int fd, int old_mask, int new_mask)
{
    struct kevent ch[2];
    int n = 0;
    if ((old_mask & FC_IN) != (new_mask & FC_IN)) {
        EV_SET(&ch[n], fd, EVFILT_READ, (new_mask & FC_IN) ? EV_ADD : EV_DELETE, 0, 0, NULL);
        n++;
    }
    if ((old_mask & FC_OUT) != (new_mask & FC_OUT)) {
        EV_SET(&ch[n], fd, EVFILT_WRITE, (new_mask & FC_OUT) ? EV_ADD : EV_DELETE, 0, 0, NULL);
        n++;
    }
    if (n == 0)
        return 0;
    return kevent(kq, ch, n, NULL, 0, NULL);
}

/* One fc_event per kevent; the two filters of one fd are merged by the caller. */
static int fc_kqueue_wait(int kq, fc_event *out, int maxevents, int timeout_ms)
{
    struct kevent evs[256];
    struct timespec ts, *tsp = NULL;
    int n, i;
    if (maxevents > 256)
        maxevents = 256;
    if (timeout_ms >= 0) {
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
        tsp = &ts;
    }
    n = kevent(kq, NULL, 0, evs, maxevents, tsp);
    for (i = 0; i < n; i++) {
        int flags = 0;
        out[i].fd = (int)evs[i].ident;
        if (evs[i].flags & EV_ERROR)
            flags |= FC_ERR;
        else if (evs[i].filter == EVFILT_READ) {
            flags |= FC_IN;
#ifdef EV_OOBAND
            /* macOS flags urgent (out-of-band) data on the read filter. */
            if (evs[i].flags & EV_OOBAND)
                flags |= FC_PRI;
#endif
        }
        else if (evs[i].filter == EVFILT_WRITE)
            flags |= FC_OUT;
        if (evs[i].flags & EV_EOF) {
            flags |= FC_HUP;
            if (evs[i].fflags)
                flags |= FC_ERR;
        }
        out[i].flags = flags;
    }
    return n;
}
#else
#define FC_HAVE_KQUEUE 0
static int fc_kqueue_create(void) { errno = ENOSYS; return -1; }
static int fc_kqueue_set(int kq, int fd, int old_mask, int new_mask)
{
    (void)kq; (void)fd; (void)old_mask; (void)new_mask;
    errno = ENOSYS;
    return -1;
}
static int fc_kqueue_wait(int kq, fc_event *out, int maxevents, int timeout_ms)
{
    (void)kq; (void)out; (void)maxevents; (void)timeout_ms;
    errno = ENOSYS;
    return -1;
}
#endif

/* ---- select ------------------------------------------------------------ */
static int fc_fd_setsize(void) { return FD_SETSIZE; }

/* select() over fds[0..n) with masks[]; results into out[], returns count. */
static int fc_select_wait(const int *fds, const int *masks, int n, fc_event *out,
                          int timeout_ms)
{
    fd_set r, w, e;
    struct timeval tv, *tvp = NULL;
    int i, maxfd = -1, rc, count = 0;
    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_ZERO(&e);
    for (i = 0; i < n; i++) {
        if (masks[i] & FC_IN)
            FD_SET(fds[i], &r);
        if (masks[i] & FC_OUT)
            FD_SET(fds[i], &w);
        if (masks[i] & FC_PRI)
            FD_SET(fds[i], &e);
        if (fds[i] > maxfd)
            maxfd = fds[i];
    }
    if (timeout_ms >= 0) {
        tv.tv_sec = timeout_ms / 1000;
        tv.tv_usec = (long)(timeout_ms % 1000) * 1000L;
        tvp = &tv;
    }
    rc = select(maxfd + 1, &r, &w, &e, tvp);
    if (rc <= 0)
        return rc;
    for (i = 0; i < n; i++) {
        int flags = 0;
        if (FD_ISSET(fds[i], &r))
            flags |= FC_IN;
        if (FD_ISSET(fds[i], &w))
            flags |= FC_OUT;
        if (FD_ISSET(fds[i], &e))
            flags |= FC_PRI;
        if (flags) {
            out[count].fd = fds[i];
            out[count].flags = flags;
            count++;
        }
    }
    return count;
}

/* ---- poll -------------------------------------------------------------- */
static int fc_poll_wait(struct pollfd *pfds, int n, fc_event *out, int timeout_ms)
{
    int i, rc, count = 0;
    rc = poll(pfds, (nfds_t)n, timeout_ms);
    if (rc <= 0)
        return rc;
    for (i = 0; i < n && count < rc; i++) {
        if (pfds[i].revents) {
            out[count].fd = pfds[i].fd;
            out[count].flags = pfds[i].revents;
            count++;
        }
    }
    return count;
}

/* ---- monotonic clock --------------------------------------------------- */
static double fc_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif /* FASTCORE_COMPAT_H */
