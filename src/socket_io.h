/* recv(2) and send(2) straight on a socket.socket's descriptor.
 *
 * socket.socket's own recv()/send() parse their arguments, release the GIL
 * around the call and, for recv, allocate the whole buffer size and shrink it
 * afterwards: about 3,000 of the 15,000 user-space instructions of a 64 byte
 * ping-pong message. For a non-blocking socket (timeout 0, as every asyncore
 * socket is) the call cannot wait, so the core makes it itself, with the GIL
 * held, and raises what the method raises (OSError from errno, with its
 * subclasses).
 *
 * The descriptor and timeout are read from the socket object's first fields
 * (cpython_internals.h: fc_socket_head), checked against a real socket at
 * import (socket_layout_matches in dispatcher.pxi): none of this is used if
 * they differ.
 */
#ifndef FASTCORE_SOCKET_IO_H
#define FASTCORE_SOCKET_IO_H

#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "cpython_internals.h"

/* Small reads land here and are copied into a bytes object of their own size;
 * the GIL, held throughout, keeps the buffer to one caller at a time. */
#define FC_RECV_BUFFER_SIZE 65536
static char fc_recv_buffer[FC_RECV_BUFFER_SIZE];

/* A read above this size goes straight into a bytes object of the full buffer
 * size, shrunk afterwards: one copy of a large read costs more than the
 * allocation it saves. */
#define FC_RECV_COPY_LIMIT 4096

/* recv(2) into buf, again after EINTR as the method does: the count, or -1
 * with the exception set. */
static Py_ssize_t fc_recv_into(PyObject *sock, char *buf, Py_ssize_t size)
{
    ssize_t got;
    for (;;) {
        got = recv(fc_socket_fd(sock), buf, (size_t)size, 0);
        if (got >= 0)
            return got;
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
}

/* recv(fd, size) for a non-blocking socket; *large is the caller's memory of
 * whether its last read was large, used to pick where the next one lands. */
static PyObject *fc_socket_recv(PyObject *sock, Py_ssize_t size, int *large)
{
    Py_ssize_t got;
    PyObject *data;

    if (!*large && size <= FC_RECV_BUFFER_SIZE) {
        got = fc_recv_into(sock, fc_recv_buffer, size);
        if (got < 0)
            return NULL;
        *large = got > FC_RECV_COPY_LIMIT;
        return PyBytes_FromStringAndSize(fc_recv_buffer, got);
    }
    data = PyBytes_FromStringAndSize(NULL, size);
    if (data == NULL)
        return NULL;
    got = fc_recv_into(sock, PyBytes_AS_STRING(data), size);
    if (got < 0) {
        Py_DECREF(data);
        return NULL;
    }
    *large = got > FC_RECV_COPY_LIMIT;
    if (got != size && _PyBytes_Resize(&data, got) < 0)
        return NULL;
    return data;
}

/* send(fd, buf, len) for a non-blocking socket: the count sent, as an int. */
static PyObject *fc_socket_send(PyObject *sock, const char *buf, Py_ssize_t len)
{
    ssize_t sent;
    for (;;) {
        sent = send(fc_socket_fd(sock), buf, (size_t)len, 0);
        if (sent >= 0)
            return PyLong_FromSsize_t(sent);
        if (errno != EINTR)
            return PyErr_SetFromErrno(PyExc_OSError);
        if (PyErr_CheckSignals() < 0)
            return NULL;
    }
}

/* The bytes objects of list items, in order, with sendmsg(2), FC_SENDV_BATCH
 * buffers a call, until one call takes less than it was given: the count
 * sent, or -1 with the exception set (nothing was sent then). */
#define FC_SENDV_BATCH 64
static Py_ssize_t fc_socket_sendv(PyObject *sock, PyObject *items)
{
    struct iovec iov[FC_SENDV_BATCH];
    struct msghdr msg;
    Py_ssize_t count = PyList_GET_SIZE(items), next = 0, total = 0;
    size_t offered;
    ssize_t sent;
    int n;

    while (next < count) {
        offered = 0;
        for (n = 0; n < FC_SENDV_BATCH && next + n < count; n++) {
            PyObject *item = PyList_GET_ITEM(items, next + n);
            iov[n].iov_base = PyBytes_AS_STRING(item);
            iov[n].iov_len = (size_t)PyBytes_GET_SIZE(item);
            offered += iov[n].iov_len;
        }
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = iov;
        msg.msg_iovlen = n;
        sent = sendmsg(fc_socket_fd(sock), &msg, 0);
        if (sent < 0) {
            /* After a part went: report that part; a signal's handler
             * or the error runs at the next call. */
            if (total)
                return total;
            if (errno == EINTR) {
                if (PyErr_CheckSignals() < 0)
                    return -1;
                continue;
            }
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        total += sent;
        if ((size_t)sent < offered)
            break;
        next += n;
    }
    return total;
}

#endif
