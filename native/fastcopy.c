/* replicator._fastcopy: the small-file local copy loop and CRC32C, in C.
 *
 * copy_small() does for a whole bin of small local files what
 * replicator.transfer.stage_small_local did per file in Python, with the interpreter lock
 * released for the whole loop: open the source, fstat, create the staged name afresh, one
 * read of one byte more than the size, one write, fstat of both, times / mode on the
 * descriptor, close, rename into place when asked, CRC32C of the bytes in hand.
 *
 * It never reports an error of its own: any failure or anything unusual (a short read, a
 * source that changed, a stale staged name, not a regular file, too big) cleans up the
 * staged name and marks the item failed (None); the Python side hands that file to the
 * general path, which owns every error's class, side and retry.
 *
 * The engine calls it with threads=1: copy_small(threads=2) for 20k x 4 KiB files on a
 * tmpfs, in `replicator copy` on 2 cores at load 4, took 2.06/2.57/5.31 s against
 * 1.02/1.49/1.97 s with one thread (interleaved): the other core is the driver's.
 *
 * rename_threads > 1 leaves the renames to the end of the bin and does them from that many
 * threads at once. On ext4 (auto_da_alloc, the default) a rename over an existing file
 * first starts the write-back of the new one and waits ~0.2-2 ms for it, almost no CPU; a
 * re-sync's updated files, renamed one after another, waited for each in turn (500 renames
 * over 1 KiB files in as many directories: 0.19-1.02 s serial, 0.04-0.13 s from 2-8
 * threads, load 1.6-4.4). The engine asks for it for bins that replace files.
 *
 * crc32c(crc, buffer) extends a CRC32C like google_crc32c.extend (SSE4.2 crc32 instruction
 * when the CPU has it, checked at import; a slicing-by-8 table otherwise).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "timens.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <nmmintrin.h>
#define HAVE_X86_CRC 1
#endif

/* ---- CRC32C (Castagnoli, reflected polynomial 0x82F63B78) ---- */

static uint32_t crc_table[8][256];
static int use_hw;
#define CRC_LONG 8192 /* the blocks of the three-chain CRC (crc_hw) */
#define CRC_SHORT 256
static uint32_t crc_long[4][256], crc_short[4][256]; /* shift over CRC_LONG / CRC_SHORT zeros */
static void crc_zeros(uint32_t zeros[4][256], size_t len);

static void crc_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int t = 1; t < 8; t++)
            crc_table[t][n] = (crc_table[t - 1][n] >> 8) ^ crc_table[0][crc_table[t - 1][n] & 0xff];
    crc_zeros(crc_long, CRC_LONG);
    crc_zeros(crc_short, CRC_SHORT);
#ifdef HAVE_X86_CRC
    __builtin_cpu_init();
    use_hw = __builtin_cpu_supports("sse4.2") != 0;
#endif
}

static uint32_t crc_sw(uint32_t c, const unsigned char *p, size_t n)
{
    while (n && ((uintptr_t)p & 7)) {
        c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= c; /* little-endian */
        c = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^
            crc_table[5][(w >> 16) & 0xff] ^ crc_table[4][(w >> 24) & 0xff] ^
            crc_table[3][(w >> 32) & 0xff] ^ crc_table[2][(w >> 40) & 0xff] ^
            crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][(w >> 56) & 0xff];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return c;
}

/* Shifting a CRC over n zero bytes (n a power of two) by four byte tables: lets three
 * independent crc32 instruction chains run over three adjacent blocks at once and be joined
 * (crc32 has a latency of 3 cycles and a throughput of 1: one chain uses a third of it).
 * After Mark Adler's crc32c.c (zlib licence), the GF(2) matrix way. */

static uint32_t gf2_times(const uint32_t *mat, uint32_t vec)
{
    uint32_t sum = 0;
    while (vec) {
        if (vec & 1)
            sum ^= *mat;
        vec >>= 1;
        mat++;
    }
    return sum;
}

static void gf2_square(uint32_t *square, const uint32_t *mat)
{
    for (int n = 0; n < 32; n++)
        square[n] = gf2_times(mat, mat[n]);
}

static void crc_zeros_op(uint32_t *even, size_t len)
{
    uint32_t odd[32], row = 1;
    odd[0] = 0x82F63B78u; /* one zero bit */
    for (int n = 1; n < 32; n++) {
        odd[n] = row;
        row <<= 1;
    }
    gf2_square(even, odd); /* two zero bits */
    gf2_square(odd, even); /* four */
    do {                   /* one zero byte in even, two in odd, ... until len is used up */
        gf2_square(even, odd);
        len >>= 1;
        if (len == 0)
            return;
        gf2_square(odd, even);
        len >>= 1;
    } while (len);
    memcpy(even, odd, sizeof(odd));
}

static void crc_zeros(uint32_t zeros[4][256], size_t len)
{
    uint32_t op[32];
    crc_zeros_op(op, len);
    for (uint32_t n = 0; n < 256; n++) {
        zeros[0][n] = gf2_times(op, n);
        zeros[1][n] = gf2_times(op, n << 8);
        zeros[2][n] = gf2_times(op, n << 16);
        zeros[3][n] = gf2_times(op, n << 24);
    }
}

static inline uint32_t crc_shift(uint32_t zeros[4][256], uint32_t c)
{
    return zeros[0][c & 0xff] ^ zeros[1][(c >> 8) & 0xff] ^ zeros[2][(c >> 16) & 0xff] ^
           zeros[3][c >> 24];
}

#if defined(HAVE_X86_CRC) && defined(__x86_64__)
/* crc_hw's three chains over three adjacent blocks of `block` bytes each (a multiple of 8),
 * joined by shifting over `block` zeros (`zeros`), while 3 * block bytes are left; advances
 * *pp and *np past what it hashed */
__attribute__((target("sse4.2"))) static inline uint64_t crc_hw3(uint64_t c0,
                                                                const unsigned char **pp,
                                                                size_t *np, size_t block,
                                                                uint32_t zeros[4][256])
{
    const unsigned char *p = *pp;
    size_t n = *np;
    while (n >= 3 * block) {
        uint64_t c1 = 0, c2 = 0;
        const unsigned char *end = p + block;
        do {
            uint64_t w0, w1, w2;
            memcpy(&w0, p, 8);
            memcpy(&w1, p + block, 8);
            memcpy(&w2, p + 2 * block, 8);
            c0 = _mm_crc32_u64(c0, w0);
            c1 = _mm_crc32_u64(c1, w1);
            c2 = _mm_crc32_u64(c2, w2);
            p += 8;
        } while (p < end);
        c0 = crc_shift(zeros, (uint32_t)c0) ^ (uint32_t)c1;
        c0 = crc_shift(zeros, (uint32_t)c0) ^ (uint32_t)c2;
        p += 2 * block;
        n -= 3 * block;
    }
    *pp = p;
    *np = n;
    return c0;
}
#endif

#ifdef HAVE_X86_CRC
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const unsigned char *p,
                                                         size_t n)
{
    while (n && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8(c, *p++);
        n--;
    }
#if defined(__x86_64__)
    uint64_t c0 = c;
    /* three chains over three adjacent blocks, joined by shifting: CRC_LONG blocks, then
     * CRC_SHORT blocks for what is left */
    c0 = crc_hw3(c0, &p, &n, CRC_LONG, crc_long);
    c0 = crc_hw3(c0, &p, &n, CRC_SHORT, crc_short);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c0 = _mm_crc32_u64(c0, w);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c0;
#endif
    while (n--)
        c = _mm_crc32_u8(c, *p++);
    return c;
}
#endif

/* like google_crc32c.extend: crc is a finished CRC32C (0 for none yet) */
static uint32_t crc32c_extend(uint32_t crc, const unsigned char *p, size_t n)
{
    uint32_t c = ~crc;
#ifdef HAVE_X86_CRC
    if (use_hw)
        return ~crc_hw(c, p, n);
#endif
    return ~crc_sw(c, p, n);
}

static PyObject *py_crc32c(PyObject *self, PyObject *args)
{
    unsigned long crc;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "ky*:crc32c", &crc, &view))
        return NULL;
    if (crc > 0xffffffffUL) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "crc must fit in 32 bits");
        return NULL;
    }
    uint32_t out;
    if (view.len >= 4096) {
        Py_BEGIN_ALLOW_THREADS
        out = crc32c_extend((uint32_t)crc, view.buf, (size_t)view.len);
        Py_END_ALLOW_THREADS
    } else {
        out = crc32c_extend((uint32_t)crc, view.buf, (size_t)view.len);
    }
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(out);
}

/* the table path alone, whatever the CPU (for tests of the fallback) */
static PyObject *py_crc32c_table(PyObject *self, PyObject *args)
{
    unsigned long crc;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "ky*:crc32c_table", &crc, &view))
        return NULL;
    uint32_t out = ~crc_sw(~(uint32_t)crc, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(out);
}

/* ---- the verified big-file check ---- */

/* pread of up to n bytes at off, on through short reads; the bytes read (fewer only at the
 * end of the file), or -1 with errno */
static ssize_t pread_full(int fd, unsigned char *buf, size_t n, off_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(fd, buf + got, n - got, off + (off_t)got);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (k == 0)
            break;
        got += (size_t)k;
    }
    return (ssize_t)got;
}

/* verify_range(src_fd, dst_fd, offset, length, crc, scratch) -> (crc, bad)
 *
 * Reads [offset, offset + length) of both files in reads of up to len(scratch) / 2 bytes
 * (page-aligned ones when it has room for two pages) into the two halves of the caller's
 * scratch buffer (reused, so the bytes stay in the core's cache
 * between the read and the hashing), compares them and extends crc by the source's bytes,
 * all without the interpreter lock. bad is -1 when every byte read from the staged copy
 * equals the source's (the source may end early: a file that shrank is the caller's to
 * refuse), else the offset of the first byte that differs, or where one side ended before
 * the other (then crc is that of the source up to there). OSError on a failed read. */
static PyObject *py_verify_range(PyObject *self, PyObject *args)
{
    int src_fd, dst_fd;
    long long offset, length;
    unsigned long crc;
    Py_buffer scratch;
    if (!PyArg_ParseTuple(args, "iiLLkw*:verify_range", &src_fd, &dst_fd, &offset, &length, &crc,
                          &scratch))
        return NULL;
    /* both reads land page-aligned where the buffer allows: a buffer from malloc (a
     * bytearray's) starts 16 bytes into a page, and the kernel's copy into a misaligned
     * buffer costs about half as much again (2 GiB both sides: 0.73-1.07 s CPU, aligned
     * 0.50-0.57, load 2.4) */
    unsigned char *a = scratch.buf;
    size_t half = (size_t)scratch.len / 2;
    size_t skip = (4096 - ((uintptr_t)a & 4095)) & 4095;
    if ((size_t)scratch.len >= skip + 2 * 4096) {
        a += skip;
        half = ((size_t)scratch.len - skip) / 2 / 4096 * 4096;
    }
    if (crc > 0xffffffffUL || offset < 0 || length < 0 || half == 0) {
        PyBuffer_Release(&scratch);
        PyErr_SetString(PyExc_ValueError,
                        "verify_range: crc must fit in 32 bits, offset and length be >= 0 and "
                        "scratch hold at least 2 bytes");
        return NULL;
    }
    unsigned char *b = a + half;
    uint32_t c = (uint32_t)crc;
    long long bad = -1, pos = offset, end = offset + length;
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    while (pos < end) {
        size_t want = (size_t)(end - pos) < half ? (size_t)(end - pos) : half;
        ssize_t ka = pread_full(src_fd, a, want, (off_t)pos);
        if (ka < 0) {
            err = errno;
            break;
        }
        ssize_t kb = pread_full(dst_fd, b, want, (off_t)pos);
        if (kb < 0) {
            err = errno;
            break;
        }
        size_t same = (size_t)(ka < kb ? ka : kb);
        if (memcmp(a, b, same) != 0) {
            size_t i = 0;
            while (a[i] == b[i])
                i++;
            c = crc32c_extend(c, a, i);
            bad = pos + (long long)i;
            break;
        }
        c = crc32c_extend(c, a, same);
        if (ka != kb) {
            bad = pos + (long long)same;
            break;
        }
        if ((size_t)ka < want)
            break; /* both ended: the source shrank, the caller refuses it */
        pos += ka;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&scratch);
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return Py_BuildValue("(kL)", (unsigned long)c, bad);
}

/* ---- the small-file copy loop ---- */

struct item {
    PyObject *src, *staged, *final; /* bytes (file system encoding); final may be NULL */
    int ok;
    int defer; /* rename left to the rename threads */
    int64_t size, mtime_sec;
    long mtime_nsec;
    uint32_t crc;
};

static ssize_t read_retry(int fd, void *buf, size_t n)
{
    ssize_t r;
    do
        r = read(fd, buf, n);
    while (r < 0 && errno == EINTR);
    return r;
}

static ssize_t write_retry(int fd, const void *buf, size_t n)
{
    ssize_t r;
    do
        r = write(fd, buf, n);
    while (r < 0 && errno == EINTR);
    return r;
}

/* one file; 1 when copied (and renamed, if asked), 0 when the general path must redo it
 * (then nothing of ours is left at the staged name) */
static int copy_one(struct item *it, int rflags, int set_mtime, int set_mode, int64_t max_size,
                    unsigned char *buf)
{
    const char *src = PyBytes_AS_STRING(it->src);
    const char *staged = PyBytes_AS_STRING(it->staged);
    int infd = -1, outfd = -1;
    struct stat st, after, out;
    int64_t size;

    infd = open(src, rflags);
    if (infd < 0)
        goto fail;
    if (fstat(infd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > max_size)
        goto fail;
    size = st.st_size;
    /* opened O_NONBLOCK (a FIFO swapped in must not block the open); Linux ignores the flag
     * for a regular file's reads, and a file system that honoured it (EAGAIN, a short read)
     * sends the file to the general path, which reads it blocking: no fcntl pair here */
    outfd = open(staged, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (outfd < 0)
        goto fail;
    if (read_retry(infd, buf, (size_t)size + 1) != size)
        goto fail; /* short or long: the file changed, or an unusual file system */
    if (size && write_retry(outfd, buf, (size_t)size) != size)
        goto fail;
    if (fstat(infd, &after) != 0 || after.st_size != size ||
        after.st_mtim.tv_sec != st.st_mtim.tv_sec || after.st_mtim.tv_nsec != st.st_mtim.tv_nsec)
        goto fail;
    if (fstat(outfd, &out) != 0 || out.st_size != size)
        goto fail;
    if (set_mtime) {
        struct timespec times[2] = {st.st_mtim, st.st_mtim};
        if (futimens(outfd, times) != 0)
            goto fail;
    }
    if (set_mode && fchmod(outfd, st.st_mode & 07777) != 0)
        goto fail;
    if (close(outfd) != 0) {
        outfd = -1;
        goto fail;
    }
    outfd = -1;
    if (it->final != NULL && !it->defer && rename(staged, PyBytes_AS_STRING(it->final)) != 0)
        goto fail;
    close(infd);
    it->size = size;
    it->mtime_sec = (int64_t)st.st_mtim.tv_sec; /* in nanoseconds by time_ns_object(), holding the lock */
    it->mtime_nsec = st.st_mtim.tv_nsec;
    it->crc = crc32c_extend(0, buf, (size_t)size);
    return 1;
fail:
    if (outfd >= 0)
        close(outfd);
    unlink(staged); /* as the Python path did: no staged file of ours stays */
    if (infd >= 0)
        close(infd);
    return 0;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct worker {
    struct item *items;
    Py_ssize_t n, start, step;
    int rflags, set_mtime, set_mode;
    int64_t max_size, deadline_ns;
    unsigned char *buf;
};

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    Py_ssize_t i;
    for (i = w->start; i < w->n; i += w->step) {
        if (w->deadline_ns && now_ns() >= w->deadline_ns)
            break;
        w->items[i].ok = copy_one(&w->items[i], w->rflags, w->set_mtime, w->set_mode,
                                  w->max_size, w->buf);
    }
    for (; i < w->n; i += w->step)
        w->items[i].ok = 2; /* not attempted */
    return NULL;
}

struct renamer {
    struct item *items;
    Py_ssize_t n;
    Py_ssize_t *next; /* shared: the next item to look at */
};

/* the deferred renames of the copied items, each taken by one thread; a rename that fails
 * removes the staged copy and marks the item for the general path, as in copy_one */
static void *run_renamer(void *arg)
{
    struct renamer *r = arg;
    for (;;) {
        Py_ssize_t i = __atomic_fetch_add(r->next, 1, __ATOMIC_RELAXED);
        if (i >= r->n)
            break;
        struct item *it = &r->items[i];
        if (it->ok != 1 || it->final == NULL || !it->defer)
            continue;
        const char *staged = PyBytes_AS_STRING(it->staged);
        if (rename(staged, PyBytes_AS_STRING(it->final)) != 0) {
            unlink(staged);
            it->ok = 0;
        }
    }
    return NULL;
}

static void free_items(struct item *items, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_XDECREF(items[i].src);
        Py_XDECREF(items[i].staged);
        Py_XDECREF(items[i].final);
    }
    PyMem_Free(items);
}

static PyObject *py_copy_small(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"items", "follow_links", "set_mtime", "set_mode", "max_size",
                             "deadline", "threads", "rename_threads", NULL};
    PyObject *seq_in, *deadline_obj = Py_None;
    int follow, set_mtime, set_mode, threads = 1, rename_threads = 1;
    long long max_size;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OpppL|Oii:copy_small", kwlist, &seq_in,
                                     &follow, &set_mtime, &set_mode, &max_size, &deadline_obj,
                                     &threads, &rename_threads))
        return NULL;
    if (max_size < 0 || max_size > (1LL << 30)) {
        PyErr_SetString(PyExc_ValueError, "max_size must be between 0 and 1 GiB");
        return NULL;
    }
    if (threads < 1 || threads > 16) {
        PyErr_SetString(PyExc_ValueError, "threads must be between 1 and 16");
        return NULL;
    }
    if (rename_threads < 1 || rename_threads > 16) {
        PyErr_SetString(PyExc_ValueError, "rename_threads must be between 1 and 16");
        return NULL;
    }
    int64_t deadline_ns = 0;
    if (deadline_obj != Py_None) {
        double d = PyFloat_AsDouble(deadline_obj);
        if (d == -1.0 && PyErr_Occurred())
            return NULL;
        deadline_ns = (int64_t)(d * 1e9);
        if (deadline_ns <= 0)
            deadline_ns = 1;
    }
    PyObject *seq = PySequence_Fast(seq_in, "items must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    struct item *items = PyMem_Calloc(n ? (size_t)n : 1, sizeof(struct item));
    if (items == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *s, *d, *f;
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 3) {
            PyErr_SetString(PyExc_TypeError, "each item must be (source, staged, final or None)");
            goto error;
        }
        s = PyTuple_GET_ITEM(t, 0);
        d = PyTuple_GET_ITEM(t, 1);
        f = PyTuple_GET_ITEM(t, 2);
        if (!PyUnicode_FSConverter(s, &items[i].src) || !PyUnicode_FSConverter(d, &items[i].staged))
            goto error;
        if (f != Py_None && !PyUnicode_FSConverter(f, &items[i].final))
            goto error;
        items[i].defer = rename_threads > 1;
    }
    Py_DECREF(seq);
    seq = NULL;

    if (threads > n)
        threads = n ? (int)n : 1;
    struct worker workers[16];
    int rflags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | (follow ? 0 : O_NOFOLLOW);
    for (int t = 0; t < threads; t++) {
        workers[t] = (struct worker){items, n, t, threads, rflags, set_mtime, set_mode,
                                     max_size, deadline_ns, malloc((size_t)max_size + 1)};
        if (workers[t].buf == NULL) {
            for (int u = 0; u <= t; u++)
                free(workers[u].buf);
            free_items(items, n);
            return PyErr_NoMemory();
        }
    }
    pthread_t tids[16];
    int started[16] = {0};
    Py_BEGIN_ALLOW_THREADS
    for (int t = 1; t < threads; t++)
        started[t] = pthread_create(&tids[t], NULL, run_worker, &workers[t]) == 0;
    run_worker(&workers[0]);
    for (int t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(tids[t], NULL);
        else
            run_worker(&workers[t]); /* no thread to be had: this one does its share */
    }
    if (rename_threads > 1) {
        Py_ssize_t next = 0;
        struct renamer ren = {items, n, &next};
        pthread_t rtids[16];
        int rstarted[16] = {0};
        for (int t = 1; t < rename_threads; t++)
            rstarted[t] = pthread_create(&rtids[t], NULL, run_renamer, &ren) == 0;
        run_renamer(&ren); /* this thread too: it ends when every item is taken */
        for (int t = 1; t < rename_threads; t++)
            if (rstarted[t])
                pthread_join(rtids[t], NULL);
    }
    Py_END_ALLOW_THREADS
    for (int t = 0; t < threads; t++)
        free(workers[t].buf);

    PyObject *result = PyList_New(n);
    if (result == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r;
        if (items[i].ok == 2) { /* not attempted: the deadline passed */
            r = Py_NewRef(Py_False);
        } else if (items[i].ok) {
            PyObject *mt = time_ns_object(items[i].mtime_sec, items[i].mtime_nsec);
            r = mt == NULL ? NULL : Py_BuildValue("(LNk)", (long long)items[i].size, mt,
                                                  (unsigned long)items[i].crc);
            if (r == NULL) {
                Py_DECREF(result);
                goto error;
            }
        } else {
            r = Py_NewRef(Py_None);
        }
        PyList_SET_ITEM(result, i, r);
    }
    free_items(items, n);
    return result;
error:
    Py_XDECREF(seq);
    free_items(items, n);
    return NULL;
}

static PyMethodDef methods[] = {
    {"crc32c", py_crc32c, METH_VARARGS,
     "crc32c(crc, buffer) -> int: CRC32C of buffer extending crc (as google_crc32c.extend)."},
    {"crc32c_table", py_crc32c_table, METH_VARARGS,
     "crc32c_table(crc, buffer) -> int: as crc32c, by the table alone (tests the fallback)."},
    {"verify_range", py_verify_range, METH_VARARGS,
     "verify_range(src_fd, dst_fd, offset, length, crc, scratch) -> (crc, bad)\n\n"
     "Reads the range from both files in reads of up to len(scratch) // 2 (page-aligned)\n"
     "into the halves of the "
     "writable scratch buffer, the interpreter lock released; crc extended by the source's\n"
     "bytes; bad = -1 when the staged bytes equal the source's, else the offset of the\n"
     "first byte that differs (or where one file ended before the other)."},
    {"copy_small", (PyCFunction)(void (*)(void))py_copy_small, METH_VARARGS | METH_KEYWORDS,
     "copy_small(items, follow_links, set_mtime, set_mode, max_size, deadline=None,\n"
     "           threads=1, rename_threads=1) -> list\n\n"
     "items: (source, staged, final or None) paths. Copies each source to its staged name\n"
     "(and renames it to final when given), the interpreter lock released throughout, in\n"
     "`threads` threads (items dealt out in turn); rename_threads > 1: the renames after\n"
     "all the copies, from that many threads at once; starts no item once time.time() >=\n"
     "deadline. One entry per item: (size, mtime_ns, crc32c) when copied, None when the\n"
     "general path must redo it, False when not attempted (the deadline passed)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastcopy",
    "The small-file local copy loop and CRC32C in C (see native/fastcopy.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__fastcopy(void)
{
    crc_init();
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    /* the engine passes rename_threads only to a build that takes it (a stale build
     * without it keeps working, renaming in the copy loop) */
    if (PyModule_AddIntConstant(m, "hardware_crc", use_hw) != 0 ||
        PyModule_AddIntConstant(m, "has_rename_threads", 1) != 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
