/* proxy.c — a small TCP proxy for fault tests: forwards 127.0.0.1:PORT to a target and, as a
 * control file says, passes, delays, drops, blackholes or half-blackholes the traffic.
 *   proxy TARGET_HOST:PORT CONTROL_FILE      (listens on a free 127.0.0.1 port)
 * At start it writes the port to CONTROL_FILE.port. The control file holds one mode line:
 *   pass | delay MS | drop | cut | blackhole | oneway
 *   drop: close every connection and close new ones at once; cut: close every connection once,
 *   then pass; blackhole: keep connections but forward nothing (new ones are accepted and left
 *   hanging); oneway: forward client→server only (answers are held back: an unknown outcome).
 * The file is re-read when it changes (checked every 10 ms); the mode in force is then written
 * to CONTROL_FILE.state, so a test knows when a change took effect. Loopback only. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_PAIRS 512
#define CHUNK 65536

enum mode { M_PASS, M_DELAY, M_DROP, M_CUT, M_BLACKHOLE, M_ONEWAY };

/* Bytes read from one side, waiting to be written to the other (after the delay). */
typedef struct chunk {
    struct chunk *next;
    uint64_t due;
    size_t len, off;
    char data[];
} chunk;

typedef struct pipe_dir {
    chunk *head, *tail;
    size_t queued;
    bool eof;              /* the reading side closed: shut down the writing side when drained */
} pipe_dir;

typedef struct pair {
    int fd[2];             /* 0: client, 1: server */
    bool connecting;       /* server connect in progress */
    pipe_dir dir[2];       /* dir[0]: client → server, dir[1]: server → client */
} pair;

static pair pairs[MAX_PAIRS];
static size_t npairs;
static enum mode mode = M_PASS;
static int delay_ms;
static struct sockaddr_in target;
static const char *ctl_path;
static struct timespec ctl_mtime;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void pair_close(size_t i)
{
    pair *p = &pairs[i];
    for (int k = 0; k < 2; k++) {
        if (p->fd[k] >= 0)
            close(p->fd[k]);
        for (chunk *c = p->dir[k].head, *n; c; c = n) {
            n = c->next;
            free(c);
        }
    }
    pairs[i] = pairs[--npairs];
}

static void close_all(void)
{
    while (npairs)
        pair_close(npairs - 1);
}

static void write_state(const char *line)
{
    char path[4096], tmp[4096];
    snprintf(path, sizeof path, "%s.state", ctl_path);
    snprintf(tmp, sizeof tmp, "%s.state.tmp", ctl_path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    fprintf(f, "%s\n", line);
    fclose(f);
    rename(tmp, path);
}

/* Re-reads the control file when its mtime changed; applies the new mode. */
static void read_control(void)
{
    struct stat st;
    if (stat(ctl_path, &st) < 0)
        return;
    if (st.st_mtim.tv_sec == ctl_mtime.tv_sec && st.st_mtim.tv_nsec == ctl_mtime.tv_nsec)
        return;
    ctl_mtime = st.st_mtim;
    FILE *f = fopen(ctl_path, "r");
    if (!f)
        return;
    char line[128] = "";
    if (!fgets(line, sizeof line, f))
        line[0] = 0;
    fclose(f);
    line[strcspn(line, "\r\n")] = 0;
    int ms = 0;
    if (strcmp(line, "pass") == 0 || line[0] == 0)
        mode = M_PASS;
    else if (sscanf(line, "delay %d", &ms) == 1 && ms >= 0)
        mode = M_DELAY, delay_ms = ms;
    else if (strcmp(line, "drop") == 0)
        mode = M_DROP;
    else if (strcmp(line, "cut") == 0)
        mode = M_CUT;
    else if (strcmp(line, "blackhole") == 0)
        mode = M_BLACKHOLE;
    else if (strcmp(line, "oneway") == 0)
        mode = M_ONEWAY;
    else {
        fprintf(stderr, "proxy: unknown mode '%s'\n", line);
        return;
    }
    if (mode == M_DROP || mode == M_CUT)
        close_all();
    if (mode == M_CUT)
        mode = M_PASS;
    write_state(line[0] ? line : "pass");
}

static void accept_one(int lfd)
{
    int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0)
        return;
    if (mode == M_DROP || npairs == MAX_PAIRS) {
        close(cfd);
        return;
    }
    int sfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (sfd < 0) {
        close(cfd);
        return;
    }
    int one = 1;
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = connect(sfd, (struct sockaddr *)&target, sizeof target);
    if (rc < 0 && errno != EINPROGRESS) {
        close(cfd);      /* target down: the client sees the connection closed */
        close(sfd);
        return;
    }
    pair *p = &pairs[npairs++];
    memset(p, 0, sizeof *p);
    p->fd[0] = cfd;
    p->fd[1] = sfd;
    p->connecting = rc < 0;
}

/* May side `from` be read now? (Data stays in the kernel when the mode holds it back.) */
static bool may_read(const pair *p, int from)
{
    if (p->connecting || p->dir[from].eof || p->dir[from].queued >= 4 * CHUNK)
        return false;
    if (mode == M_BLACKHOLE)
        return false;
    if (mode == M_ONEWAY && from == 1)
        return false;
    return true;
}

static bool may_write(const pipe_dir *d, uint64_t now)
{
    if (mode == M_BLACKHOLE)
        return false;
    return d->head && d->head->due <= now;
}

/* Returns false when the pair must be closed. */
static bool do_read(pair *p, int from)
{
    char buf[CHUNK];
    ssize_t n = read(p->fd[from], buf, sizeof buf);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR;
    pipe_dir *d = &p->dir[from];
    if (n == 0) {
        d->eof = true;
        if (!d->head)
            shutdown(p->fd[!from], SHUT_WR);
        return !p->dir[!from].eof;
    }
    chunk *c = malloc(sizeof *c + (size_t)n);
    if (!c)
        return false;
    c->next = NULL;
    c->due = now_ms() + (mode == M_DELAY ? (uint64_t)delay_ms : 0);
    c->len = (size_t)n;
    c->off = 0;
    memcpy(c->data, buf, (size_t)n);
    if (d->tail)
        d->tail->next = c;
    else
        d->head = c;
    d->tail = c;
    d->queued += (size_t)n;
    return true;
}

static bool do_write(pair *p, int from)
{
    pipe_dir *d = &p->dir[from];
    uint64_t now = now_ms();
    while (d->head && d->head->due <= now) {
        chunk *c = d->head;
        ssize_t n = write(p->fd[!from], c->data + c->off, c->len - c->off);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR;
        c->off += (size_t)n;
        d->queued -= (size_t)n;
        if (c->off < c->len)
            return true;
        d->head = c->next;
        if (!d->head)
            d->tail = NULL;
        free(c);
    }
    if (!d->head && d->eof)
        shutdown(p->fd[!from], SHUT_WR);
    return true;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: proxy TARGET_HOST:PORT CONTROL_FILE\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    char host[256];
    int tport;
    if (sscanf(argv[1], "%255[^:]:%d", host, &tport) != 2) {
        fprintf(stderr, "proxy: bad target '%s'\n", argv[1]);
        return 2;
    }
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)tport);
    if (inet_pton(AF_INET, host, &target.sin_addr) != 1) {
        fprintf(stderr, "proxy: target must be an IPv4 address\n");
        return 2;
    }
    ctl_path = argv[2];
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in la = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t ll = sizeof la;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&la, sizeof la) < 0 || listen(lfd, 128) < 0 ||
        getsockname(lfd, (struct sockaddr *)&la, &ll) < 0) {
        perror("proxy: listen");
        return 1;
    }
    read_control();
    if (access(ctl_path, F_OK) != 0)
        write_state("pass");
    char path[4096];
    snprintf(path, sizeof path, "%s.port", ctl_path);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror("proxy: port file");
        return 1;
    }
    fprintf(f, "%d\n", ntohs(la.sin_port));
    fclose(f);

    static struct pollfd pfd[1 + 2 * MAX_PAIRS];
    for (;;) {
        read_control();
        uint64_t now = now_ms();
        int timeout = 10;
        size_t n = 0;
        pfd[n++] = (struct pollfd){ .fd = lfd, .events = POLLIN };
        for (size_t i = 0; i < npairs; i++) {
            pair *p = &pairs[i];
            for (int k = 0; k < 2; k++) {
                short ev = 0;
                if (may_read(p, k))
                    ev |= POLLIN;
                if (k == 1 && p->connecting)
                    ev |= POLLOUT;
                else if (!p->connecting && may_write(&p->dir[!k], now))
                    ev |= POLLOUT;
                pfd[n++] = (struct pollfd){ .fd = p->fd[k], .events = ev };
            }
        }
        if (poll(pfd, n, timeout) < 0 && errno != EINTR) {
            perror("proxy: poll");
            return 1;
        }
        if (pfd[0].revents & POLLIN)
            accept_one(lfd);
        /* Walk backwards: pair_close moves the last pair into the freed slot. */
        size_t np = (n - 1) / 2;
        for (size_t i = np; i-- > 0;) {
            if (i >= npairs)
                continue;
            pair *p = &pairs[i];
            struct pollfd *pc = &pfd[1 + 2 * i], *ps = &pfd[2 + 2 * i];
            bool alive = true;
            if (p->connecting && (ps->revents & (POLLOUT | POLLERR | POLLHUP))) {
                int e = 0;
                socklen_t el = sizeof e;
                getsockopt(p->fd[1], SOL_SOCKET, SO_ERROR, &e, &el);
                if (e)
                    alive = false;
                else
                    p->connecting = false;
            } else if (!p->connecting) {
                if (pc->revents & (POLLIN | POLLHUP | POLLERR) && may_read(p, 0))
                    alive = do_read(p, 0);
                if (alive && ps->revents & (POLLIN | POLLHUP | POLLERR) && may_read(p, 1))
                    alive = do_read(p, 1);
                /* A hung-up side that may not be read (held back) would wake poll forever. */
                if (alive && (pc->revents | ps->revents) & POLLERR)
                    alive = false;
                if (alive && (((pc->revents & POLLHUP) && !may_read(p, 0)) ||
                              ((ps->revents & POLLHUP) && !may_read(p, 1))))
                    alive = false;
            }
            /* Delayed chunks become due without any poll event: try writing every round. */
            if (alive && !p->connecting && mode != M_BLACKHOLE)
                alive = do_write(p, 0) && do_write(p, 1);
            if (alive && p->dir[0].eof && p->dir[1].eof && !p->dir[0].head && !p->dir[1].head)
                alive = false;
            if (!alive)
                pair_close(i);
        }
    }
}
