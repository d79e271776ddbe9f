/* File descriptors: the console, pipes (blocking, with wait queues), packet sockets
 * (net.c) and the disk (blk.c). */
#include "kernel.h"

static struct file files[MAX_FILES];
static struct pipe pipes[MAX_PIPES];
static struct file console_in = {.type = FILE_CONSOLE_IN, .refs = 1};
static struct file console_out = {.type = FILE_CONSOLE_OUT, .refs = 1};

void files_init(void) {}

static struct file *file_alloc(int type, struct pipe *p)
{
    for (int i = 0; i < MAX_FILES; i++) {
        if (files[i].type == FILE_FREE) {
            files[i] = (struct file){.type = type, .refs = 1, .pipe = p};
            return &files[i];
        }
    }
    return NULL;
}

static void file_get(struct file *f) { f->refs++; }

static void file_put(struct file *f)
{
    if (f == &console_in || f == &console_out)
        return; /* the console files are never freed */
    if (--f->refs > 0)
        return;
    struct pipe *p = f->pipe;
    if (f->type == FILE_PIPE_R) {
        p->readers--;
        wake_all(&p->wwait);
    } else if (f->type == FILE_PIPE_W) {
        p->writers--;
        wake_all(&p->rwait);
    }
    f->type = FILE_FREE;
    if (p && p->readers == 0 && p->writers == 0) {
        frame_put((u64)p->buf - DIRECT_MAP);
        p->used = 0;
    }
}

void fds_init_console(struct task *t)
{
    t->fds[0] = &console_in;
    t->fds[1] = &console_out;
    t->fds[2] = &console_out;
    file_get(&console_in);
    file_get(&console_out);
    file_get(&console_out);
}

void fds_fork(struct task *child, struct task *parent)
{
    for (int i = 0; i < NFDS; i++) {
        child->fds[i] = parent->fds[i];
        if (child->fds[i])
            file_get(child->fds[i]);
    }
}

void fds_close_all(struct task *t)
{
    for (int i = 0; i < NFDS; i++) {
        if (t->fds[i]) {
            file_put(t->fds[i]);
            t->fds[i] = NULL;
        }
    }
}

static struct file *fd_get(u64 fd)
{
    if (fd >= NFDS)
        return NULL;
    return current_task()->fds[fd];
}

struct file *fd_file(u64 fd) { return fd_get(fd); }

int fd_open(int type)
{
    struct task *t = current_task();
    for (int i = 0; i < NFDS; i++) {
        if (t->fds[i])
            continue;
        struct file *f = file_alloc(type, NULL);
        if (!f)
            return -ENFILE;
        t->fds[i] = f;
        return i;
    }
    return -EMFILE;
}

i64 sys_close(u64 fd)
{
    struct file *f = fd_get(fd);
    if (!f)
        return -EBADF;
    current_task()->fds[fd] = NULL;
    file_put(f);
    return 0;
}

i64 sys_pipe(u64 ufds)
{
    struct task *t = current_task();
    if (!user_access_ok(t->mm, ufds, 8, 1))
        return -EFAULT;
    int fr = -1, fw = -1;
    for (int i = 0; i < NFDS && fw < 0; i++) {
        if (t->fds[i])
            continue;
        if (fr < 0)
            fr = i;
        else
            fw = i;
    }
    if (fw < 0)
        return -EMFILE;
    struct pipe *p = NULL;
    for (int i = 0; i < MAX_PIPES; i++) {
        if (!pipes[i].used) {
            p = &pipes[i];
            break;
        }
    }
    if (!p)
        return -ENFILE;
    u64 buf = frame_alloc();
    if (!buf)
        return -ENOMEM;
    struct file *r = file_alloc(FILE_PIPE_R, p);
    struct file *w = r ? file_alloc(FILE_PIPE_W, p) : NULL;
    if (!w) {
        if (r)
            r->type = FILE_FREE;
        frame_put(buf);
        return -ENFILE;
    }
    *p = (struct pipe){.used = 1, .buf = P2V(buf), .readers = 1, .writers = 1};
    t->fds[fr] = r;
    t->fds[fw] = w;
    int kfds[2] = {fr, fw};
    return copy_to_user(ufds, kfds, sizeof kfds);
}

static i64 pipe_read(struct pipe *p, u64 ubuf, u64 len)
{
    while (p->wpos == p->rpos) {
        if (p->writers == 0)
            return 0;
        sleep_on(&p->rwait);
    }
    u64 avail = p->wpos - p->rpos;
    u64 n = len < avail ? len : avail;
    for (u64 done = 0; done < n;) {
        u64 off = p->rpos % PIPE_BUF_SIZE;
        u64 chunk = PIPE_BUF_SIZE - off;
        if (chunk > n - done)
            chunk = n - done;
        memcpy((void *)(ubuf + done), p->buf + off, chunk);
        p->rpos += chunk;
        done += chunk;
    }
    wake_all(&p->wwait);
    return (i64)n;
}

static i64 pipe_write(struct pipe *p, u64 ubuf, u64 len)
{
    u64 done = 0;
    while (done < len) {
        if (p->readers == 0)
            return done ? (i64)done : -EPIPE;
        u64 space = PIPE_BUF_SIZE - (p->wpos - p->rpos);
        if (space == 0) {
            sleep_on(&p->wwait);
            continue;
        }
        u64 off = p->wpos % PIPE_BUF_SIZE;
        u64 chunk = PIPE_BUF_SIZE - off;
        if (chunk > space)
            chunk = space;
        if (chunk > len - done)
            chunk = len - done;
        memcpy(p->buf + off, (const void *)(ubuf + done), chunk);
        p->wpos += chunk;
        done += chunk;
        wake_all(&p->rwait);
    }
    return (i64)done;
}

i64 sys_read(u64 fd, u64 buf, u64 len)
{
    struct file *f = fd_get(fd);
    if (!f || (f->type != FILE_CONSOLE_IN && f->type != FILE_PIPE_R))
        return -EBADF;
    if (!user_access_ok(current_task()->mm, buf, len, 1))
        return -EFAULT;
    if (len == 0)
        return 0;
    if (f->type == FILE_CONSOLE_IN)
        return 0; /* no console input: end of file */
    return pipe_read(f->pipe, buf, len);
}

i64 sys_write(u64 fd, u64 buf, u64 len)
{
    struct file *f = fd_get(fd);
    if (!f || (f->type != FILE_CONSOLE_OUT && f->type != FILE_PIPE_W))
        return -EBADF;
    if (!user_access_ok(current_task()->mm, buf, len, 0))
        return -EFAULT;
    if (f->type == FILE_CONSOLE_OUT) {
        kputs((const char *)buf, len);
        return (i64)len;
    }
    return pipe_write(f->pipe, buf, len);
}
