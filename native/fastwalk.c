/* replicator._fastwalk: one local directory's listing rows, in C.
 *
 * scan_rows() does what replicator.filesystems.local.LocalFileSystem.scan_rows does in
 * Python (os.open + os.scandir(fd) + DirEntry.stat(follow_symlinks=False) per entry): open
 * the directory, read it (readdir), fstatat(AT_SYMLINK_NOFOLLOW) each entry relative to the
 * open directory and sort the names by their bytes, all with the interpreter lock released;
 * then, holding it again, build the same tuples the Python loop builds:
 *
 *   files:  (prefix + name, FILE, size, mtime_ns, mode & 0o7777, None, None, False)
 *   others: (name, DIR or OTHER, 0, mtime_ns, mode & 0o7777, (st_dev, st_ino), None)
 *   links:  (name, mtime_ns) of each symlink (the Python side follows it: _scan_other)
 *
 * Names: ASCII as they are; any other name is decoded as os.fsdecode decodes it
 * (PyUnicode_DecodeFSDefaultAndSize: surrogateescape) and passed through the caller's
 * text_path, as the Python loop does. An entry that vanished between readdir and fstatat
 * (ENOENT) is skipped. Errors are the OSError the Python path raises: opening the directory
 * (filename = the path given), reading it (filename = the descriptor, as os.scandir(fd)
 * reports), stat'ing an entry (filename = the entry's name, as DirEntry.stat reports).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "timens.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    size_t name_off;   /* into the name buffer (NUL-terminated) */
    size_t name_len;
    int ascii;
    mode_t mode;
    off_t size;
    time_t mtime_sec;
    long mtime_nsec;
    dev_t dev;
    ino_t ino;
} entry_t;

typedef struct {
    entry_t *ents;
    size_t n, cap;
    char *names;
    size_t names_len, names_cap;
    int fd;           /* the directory's descriptor number (for a readdir error) */
    int err;          /* errno of the failure, 0 if none */
    int err_where;    /* 1 open, 2 readdir, 3 fstatat (err_name), 4 out of memory */
    size_t err_name;  /* offset of the name whose fstatat failed */
} scan_t;

static PyObject *zero; /* the int 0, for every non-file row's size */

static int grow(scan_t *s, size_t name_len)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        entry_t *e = realloc(s->ents, cap * sizeof *e);
        if (e == NULL)
            return -1;
        s->ents = e;
        s->cap = cap;
    }
    if (s->names_len + name_len + 1 > s->names_cap) {
        size_t cap = s->names_cap ? s->names_cap * 2 : 8192;
        while (cap < s->names_len + name_len + 1)
            cap *= 2;
        char *b = realloc(s->names, cap);
        if (b == NULL)
            return -1;
        s->names = b;
        s->names_cap = cap;
    }
    return 0;
}

static int by_name(const void *a, const void *b, void *names)
{
    const entry_t *x = a, *y = b;
    return strcmp((const char *)names + x->name_off, (const char *)names + y->name_off);
}

/* Runs without the interpreter lock. */
static void scan(const char *path, scan_t *s)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        s->err = errno;
        s->err_where = 1;
        return;
    }
    s->fd = fd;
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        s->err = errno;
        s->err_where = 1;
        close(fd);
        return;
    }
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (de == NULL) {
            if (errno != 0) {
                s->err = errno;
                s->err_where = 2;
            }
            break;
        }
        const char *name = de->d_name;
        if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0')))
            continue;
        struct stat st;
        if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT)
                continue; /* vanished between readdir and stat */
            int e = errno;
            size_t len = strlen(name);
            if (grow(s, len) != 0) {
                s->err = ENOMEM;
                s->err_where = 4;
                break;
            }
            memcpy(s->names + s->names_len, name, len + 1);
            s->err_name = s->names_len;
            s->names_len += len + 1;
            s->err = e;
            s->err_where = 3;
            break;
        }
        size_t len = strlen(name);
        if (grow(s, len) != 0) {
            s->err = ENOMEM;
            s->err_where = 4;
            break;
        }
        entry_t *e = &s->ents[s->n++];
        e->name_off = s->names_len;
        e->name_len = len;
        int ascii = 1;
        for (size_t i = 0; i < len; i++) {
            if ((unsigned char)name[i] & 0x80) {
                ascii = 0;
                break;
            }
        }
        e->ascii = ascii;
        memcpy(s->names + s->names_len, name, len + 1);
        s->names_len += len + 1;
        e->mode = st.st_mode;
        e->size = st.st_size;
        e->mtime_sec = st.st_mtim.tv_sec;
        e->mtime_nsec = st.st_mtim.tv_nsec;
        e->dev = st.st_dev;
        e->ino = st.st_ino;
    }
    closedir(d); /* closes fd */
    if (s->err == 0 && s->n > 1)
        qsort_r(s->ents, s->n, sizeof *s->ents, by_name, s->names);
}

static PyObject *decode_name(const scan_t *s, const entry_t *e, PyObject *text_path)
{
    const char *raw = s->names + e->name_off;
    if (e->ascii) {
        PyObject *u = PyUnicode_New((Py_ssize_t)e->name_len, 127);
        if (u != NULL)
            memcpy(PyUnicode_1BYTE_DATA(u), raw, e->name_len);
        return u;
    }
    PyObject *native = PyUnicode_DecodeFSDefaultAndSize(raw, (Py_ssize_t)e->name_len);
    if (native == NULL)
        return NULL;
    PyObject *text = PyObject_CallOneArg(text_path, native);
    Py_DECREF(native);
    return text;
}

static PyObject *py_scan_rows(PyObject *self, PyObject *args)
{
    PyObject *path_obj, *prefix, *text_path, *kinds;
    if (!PyArg_ParseTuple(args, "UUOO!:scan_rows", &path_obj, &prefix, &text_path, &PyTuple_Type,
                          &kinds))
        return NULL;
    if (PyTuple_GET_SIZE(kinds) != 3) {
        PyErr_SetString(PyExc_ValueError, "kinds: (FILE, DIR, OTHER)");
        return NULL;
    }
    PyObject *k_file = PyTuple_GET_ITEM(kinds, 0);
    PyObject *k_dir = PyTuple_GET_ITEM(kinds, 1);
    PyObject *k_other = PyTuple_GET_ITEM(kinds, 2);
    PyObject *encoded = PyUnicode_EncodeFSDefault(path_obj);
    if (encoded == NULL)
        return NULL;
    if ((size_t)PyBytes_GET_SIZE(encoded) != strlen(PyBytes_AS_STRING(encoded))) {
        Py_DECREF(encoded);
        PyErr_SetString(PyExc_ValueError, "scan_rows: embedded null character in path");
        return NULL;
    }
    scan_t s;
    memset(&s, 0, sizeof s);
    s.fd = -1;
    const char *cpath = PyBytes_AS_STRING(encoded);
    Py_BEGIN_ALLOW_THREADS
    scan(cpath, &s);
    Py_END_ALLOW_THREADS
    Py_DECREF(encoded);

    PyObject *files = NULL, *others = NULL, *links = NULL, *result = NULL;
    if (s.err) {
        errno = s.err;
        if (s.err_where == 1) {
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path_obj);
        } else if (s.err_where == 2) {
            PyObject *fdobj = PyLong_FromLong(s.fd);
            if (fdobj != NULL) {
                PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, fdobj);
                Py_DECREF(fdobj);
            }
        } else if (s.err_where == 3) {
            const char *raw = s.names + s.err_name;
            PyObject *name = PyUnicode_DecodeFSDefaultAndSize(raw, (Py_ssize_t)strlen(raw));
            if (name != NULL) {
                PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
                Py_DECREF(name);
            }
        } else {
            PyErr_NoMemory();
        }
        goto done;
    }
    files = PyList_New(0);
    others = PyList_New(0);
    links = PyList_New(0);
    if (files == NULL || others == NULL || links == NULL)
        goto done;
    int has_prefix = PyUnicode_GET_LENGTH(prefix) > 0;
    for (size_t i = 0; i < s.n; i++) {
        const entry_t *e = &s.ents[i];
        PyObject *name = decode_name(&s, e, text_path);
        if (name == NULL)
            goto done;
        PyObject *mt = time_ns_object(e->mtime_sec, e->mtime_nsec);
        if (mt == NULL) {
            Py_DECREF(name);
            goto done;
        }
        PyObject *row = NULL;
        PyObject *target = NULL;
        mode_t fmt = e->mode & S_IFMT;
        if (fmt == S_IFREG) {
            PyObject *key = has_prefix ? PyUnicode_Concat(prefix, name) : Py_NewRef(name);
            Py_DECREF(name);
            PyObject *size = PyLong_FromLongLong((long long)e->size);
            PyObject *mode = PyLong_FromLong((long)(e->mode & 07777));
            if (key == NULL || size == NULL || mode == NULL) {
                Py_XDECREF(key);
                Py_XDECREF(size);
                Py_XDECREF(mode);
                Py_DECREF(mt);
                goto done;
            }
            row = PyTuple_Pack(8, key, k_file, size, mt, mode, Py_None, Py_None, Py_False);
            Py_DECREF(key);
            Py_DECREF(size);
            Py_DECREF(mode);
            target = files;
        } else if (fmt == S_IFLNK) {
            row = PyTuple_Pack(2, name, mt);
            Py_DECREF(name);
            target = links;
        } else {
            PyObject *mode = PyLong_FromLong((long)(e->mode & 07777));
            PyObject *dev = PyLong_FromUnsignedLongLong((unsigned long long)e->dev);
            PyObject *ino = PyLong_FromUnsignedLongLong((unsigned long long)e->ino);
            PyObject *inode = (dev && ino) ? PyTuple_Pack(2, dev, ino) : NULL;
            if (mode != NULL && inode != NULL)
                row = PyTuple_Pack(7, name, fmt == S_IFDIR ? k_dir : k_other, zero,
                                   mt, mode, inode, Py_None);
            Py_DECREF(name);
            Py_XDECREF(mode);
            Py_XDECREF(dev);
            Py_XDECREF(ino);
            Py_XDECREF(inode);
            target = others;
        }
        Py_DECREF(mt);
        if (row == NULL)
            goto done;
        int rc = PyList_Append(target, row);
        Py_DECREF(row);
        if (rc != 0)
            goto done;
    }
    result = PyTuple_Pack(3, files, others, links);
done:
    Py_XDECREF(files);
    Py_XDECREF(others);
    Py_XDECREF(links);
    free(s.ents);
    free(s.names);
    return result;
}

static PyMethodDef methods[] = {
    {"scan_rows", py_scan_rows, METH_VARARGS,
     "scan_rows(native_path, prefix, text_path, (FILE, DIR, OTHER)) -> (files, others, links)\n\n"
     "One directory, the interpreter lock released while it is read and stat'ed: plain files\n"
     "as listing rows (prefix + name, FILE, size, mtime_ns, mode, None, None, False),\n"
     "directories and FIFOs/sockets/devices as (name, kind, 0, mtime_ns, mode, (dev, ino),\n"
     "None), symlinks as (name, mtime_ns); in name (byte) order. Raises OSError."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastwalk",
    "One local directory's listing rows in C (see native/fastwalk.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__fastwalk(void)
{
    zero = PyLong_FromLong(0);
    if (zero == NULL)
        return NULL;
    return PyModule_Create(&module);
}
