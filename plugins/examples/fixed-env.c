/*
 * fixed-env: a preload library that gives a build tool a fixed clock, fixed entropy and fixed
 * file metadata, so that a tool which snapshots an interpreter's memory (Wizer in
 * componentize-js, component-init in componentize-py) writes the same bytes on every run.
 *
 *   LD_PRELOAD=build/fixed-env.so [FIXED_ENV_ROOT=/abs/dir] TOOL ...
 *
 * The library removes both variables from the tool's environment when it loads. What the
 * process sees, in all of its threads:
 *   - clock_gettime: every clock reads 2023-11-14 22:13:20 UTC and stands still (interposed; the
 *     vDSO cannot be trapped). A snapshotted program that sleeps would wait forever.
 *   - getrandom, from libc or as a raw system call: the same fixed bytes on every call. Hash-table
 *     seeds, CPython's hash secret and `random` seed, SpiderMonkey's Math.random and hash keys,
 *     Rust's RandomState and the WASI hosts' random generators all start from them.
 *   - stat, fstat, lstat, newfstatat, statx of anything below FIXED_ENV_ROOT/<dir>/: fixed
 *     times, device 0:1, an inode number hashed from the path below <dir> (so the randomly
 *     named temporary directory a tool extracts into does not count) and, for a directory, a
 *     size of 4096 (the filesystem's own differs: tmpfs counts entries). WASI hosts report a
 *     file's inode to the guest as a hash of (device, inode), and fresh files get new inodes.
 *     Everything else is left as it is: ld.so needs real inode numbers to tell libraries apart.
 *   - getdents64 of a directory below FIXED_ENV_ROOT/<dir>/: its entries sorted by name (the
 *     filesystem's order differs: hash order on ext4, newest first on tmpfs), with the inode
 *     numbers above.
 *
 * All but clock_gettime are seccomp-trapped (SIGSYS) and emulated in the signal handler,
 * because Rust's rustix (in Wizer and componentize-py) makes these system calls itself rather
 * than through libc, out of LD_PRELOAD's reach; the handler makes the real ones from one
 * address that the filter lets through. The filter is
 * inherited across exec while the handler is not, so the tool must not run other programs
 * (componentize-py runs `pipenv` and `python3` to look for site-packages unless VIRTUAL_ENV is
 * set; build.sh sets it). Linux x86-64 only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#if !defined(__x86_64__) || !defined(__linux__)
#error "fixed-env supports Linux x86-64 only"
#endif

#define FIXED_TIME 1700000000

int clock_gettime(clockid_t id, struct timespec *ts) {
    (void)id;
    ts->tv_sec = FIXED_TIME;
    ts->tv_nsec = 0;
    return 0;
}

/* The same bytes on every call: a fixed xorshift stream, independent of call order and thread. */
static void fixed_bytes(void *buf, size_t len) {
    unsigned char *p = buf;
    unsigned long long x = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (unsigned char)x;
    }
}

/* A raw system call from one known address, which the filter lets through. */
long fixed_env_syscall(long n, long a, long b, long c, long d, long e, long f);
extern char fixed_env_syscall_return[];
__asm__(".text\n"
        ".globl fixed_env_syscall\n"
        ".type fixed_env_syscall,@function\n"
        "fixed_env_syscall:\n"
        "  mov %rdi, %rax\n"
        "  mov %rsi, %rdi\n"
        "  mov %rdx, %rsi\n"
        "  mov %rcx, %rdx\n"
        "  mov %r8, %r10\n"
        "  mov %r9, %r8\n"
        "  mov 8(%rsp), %r9\n"
        "  syscall\n"
        ".globl fixed_env_syscall_return\n"
        "fixed_env_syscall_return:\n"
        "  ret\n");

static char root[4096];
static size_t root_len;

/* The absolute path of `name` relative to `dirfd` (of `dirfd` itself when `name` is empty). */
static int resolve(int dirfd, const char *name, char *out, size_t cap) {
    size_t n;
    if (name[0] == '/') {
        n = strlen(name);
        if (n >= cap) return 0;
        memcpy(out, name, n + 1);
        return 1;
    }
    if (dirfd == AT_FDCWD) {
        if (fixed_env_syscall(SYS_getcwd, (long)out, (long)cap, 0, 0, 0, 0) <= 0) return 0;
        n = strlen(out);
    } else {
        if (dirfd < 0) return 0;
        char link[40] = "/proc/self/fd/", digits[12];
        int k = 0;
        for (int v = dirfd; k == 0 || v; v /= 10) digits[k++] = (char)('0' + v % 10);
        size_t l = strlen(link);
        while (k) link[l++] = digits[--k];
        link[l] = 0;
        long r = fixed_env_syscall(SYS_readlink, (long)link, (long)out, (long)cap - 1, 0, 0, 0);
        if (r <= 0) return 0;
        n = (size_t)r;
        out[n] = 0;
    }
    if (name[0]) {
        size_t m = strlen(name);
        if (n + 1 + m >= cap) return 0;
        out[n] = '/';
        memcpy(out + n + 1, name, m + 1);
    }
    return 1;
}

/* The inode number to report for a path below root/<dir>/, or 0 if it is not one. */
static unsigned long long inode_of_path(const char *path) {
    if (!root_len || strncmp(path, root, root_len) != 0 || path[root_len] != '/') return 0;
    const char *below = strchr(path + root_len + 1, '/');
    if (!below) below = "/";
    unsigned long long h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (; *below; below++) h = (h ^ (unsigned char)*below) * 0x100000001b3ULL;
    return h ? h : 1;
}

static unsigned long long fixed_inode(int dirfd, const char *name) {
    char path[8192];
    if (!name) name = ""; /* statx(fd, NULL, AT_EMPTY_PATH) */
    if (!root_len || !resolve(dirfd, name, path, sizeof path)) return 0;
    return inode_of_path(path);
}

static void fix_statx(struct statx *s, unsigned long long inode) {
    struct statx_timestamp t = {.tv_sec = FIXED_TIME, .tv_nsec = 0};
    s->stx_atime = s->stx_btime = s->stx_ctime = s->stx_mtime = t;
    s->stx_ino = inode;
    s->stx_dev_major = 0;
    s->stx_dev_minor = 1;
    if (S_ISDIR(s->stx_mode)) {
        s->stx_size = 4096;
        s->stx_blocks = 8;
    }
}

static void fix_stat(struct stat *s, unsigned long long inode) {
    struct timespec t = {.tv_sec = FIXED_TIME, .tv_nsec = 0};
    s->st_atim = s->st_mtim = s->st_ctim = t;
    s->st_ino = inode;
    s->st_dev = 1;
    if (S_ISDIR(s->st_mode)) {
        s->st_size = 4096;
        s->st_blocks = 8;
    }
}

/*
 * Directory listings below root/<dir>/ come sorted by name: the order getdents64 returns is the
 * filesystem's (hash order on ext4, newest first on tmpfs), and an interpreter that lists a
 * directory allocates its names in that order. The whole directory is read at the first call
 * (or whenever the descriptor's position is back at 0, as after rewinddir) and served from a
 * copy; the entries' d_off are their indexes, so seekdir to one of them is not supported.
 */
struct dirent64_head {
    unsigned long long d_ino;
    long long d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

#define MAX_LISTED_FD 4096
static struct listing {
    char *data; /* sorted records */
    size_t size, mapped, pos;
} listings[MAX_LISTED_FD];

static void *map(size_t size) {
    long r = fixed_env_syscall(SYS_mmap, 0, (long)size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return r < 0 && r > -4096 ? NULL : (void *)r;
}

static void unmap(void *p, size_t size) {
    if (p) fixed_env_syscall(SYS_munmap, (long)p, (long)size, 0, 0, 0, 0);
}

static void drop_listing(struct listing *l) {
    unmap(l->data, l->mapped);
    memset(l, 0, sizeof *l);
}

/* Reads the whole directory behind fd into l, sorted by name. 0 or a negative errno. */
static long read_listing(int fd, const char *dir, struct listing *l) {
    size_t cap = 1 << 16, size = 0;
    char *raw = map(cap);
    if (!raw) return -ENOMEM;
    for (;;) {
        if (cap - size < 4096) {
            char *bigger = map(cap * 2);
            if (!bigger) { unmap(raw, cap); return -ENOMEM; }
            memcpy(bigger, raw, size);
            unmap(raw, cap);
            raw = bigger;
            cap *= 2;
        }
        long r = fixed_env_syscall(SYS_getdents64, fd, (long)(raw + size), (long)(cap - size), 0, 0, 0);
        if (r < 0) { unmap(raw, cap); return r; }
        if (r == 0) break;
        size += (size_t)r;
    }
    size_t count = 0;
    for (size_t o = 0; o < size; o += ((struct dirent64_head *)(raw + o))->d_reclen) count++;
    size_t index_size = (count + 1) * sizeof(size_t);
    size_t *index = map(index_size);
    char *sorted = map(size ? size : 1);
    if (!index || !sorted) { unmap(raw, cap); unmap(index, index_size); unmap(sorted, size ? size : 1); return -ENOMEM; }
    size_t n = 0;
    for (size_t o = 0; o < size; o += ((struct dirent64_head *)(raw + o))->d_reclen) {
        /* insertion sort: directories here hold at most a few thousand names */
        const char *name = ((struct dirent64_head *)(raw + o))->d_name;
        size_t i = n++;
        while (i > 0 && strcmp(((struct dirent64_head *)(raw + index[i - 1]))->d_name, name) > 0) {
            index[i] = index[i - 1];
            i--;
        }
        index[i] = o;
    }
    char path[8192];
    size_t dir_len = strlen(dir), out = 0;
    for (size_t i = 0; i < n; i++) {
        struct dirent64_head *from = (struct dirent64_head *)(raw + index[i]);
        struct dirent64_head *to = (struct dirent64_head *)(sorted + out);
        memcpy(to, from, from->d_reclen);
        to->d_off = (long long)(i + 1);
        size_t m = strlen(from->d_name);
        if (dir_len + 1 + m < sizeof path) {
            memcpy(path, dir, dir_len);
            path[dir_len] = '/';
            memcpy(path + dir_len + 1, from->d_name, m + 1);
            unsigned long long inode = inode_of_path(path);
            if (inode) to->d_ino = inode;
        }
        out += from->d_reclen;
    }
    unmap(raw, cap);
    unmap(index, index_size);
    drop_listing(l);
    l->data = sorted;
    l->mapped = size ? size : 1;
    l->size = size;
    l->pos = 0;
    return 0;
}

static long sorted_getdents64(int fd, char *buf, size_t count) {
    char dir[8192];
    if (!root_len || fd < 0 || fd >= MAX_LISTED_FD || !resolve(fd, "", dir, sizeof dir) || !inode_of_path(dir))
        return fixed_env_syscall(SYS_getdents64, fd, (long)buf, (long)count, 0, 0, 0);
    struct listing *l = &listings[fd];
    long position = fixed_env_syscall(SYS_lseek, fd, 0, SEEK_CUR, 0, 0, 0);
    if (position < 0) return position;
    if (position == 0 || !l->data) {
        long r = read_listing(fd, dir, l);
        if (r < 0) return r;
    }
    size_t given = 0;
    while (l->pos < l->size) {
        struct dirent64_head *d = (struct dirent64_head *)(l->data + l->pos);
        if (given + d->d_reclen > count) break;
        memcpy(buf + given, d, d->d_reclen);
        given += d->d_reclen;
        l->pos += d->d_reclen;
    }
    if (given == 0 && l->pos < l->size) return -EINVAL;
    if (l->pos >= l->size && given == 0) drop_listing(l);
    return (long)given;
}

static void on_sigsys(int sig, siginfo_t *info, void *context) {
    (void)sig;
    greg_t *reg = ((ucontext_t *)context)->uc_mcontext.gregs;
    long n = info->si_syscall;
    long a0 = reg[REG_RDI], a1 = reg[REG_RSI], a2 = reg[REG_RDX];
    long a3 = reg[REG_R10], a4 = reg[REG_R8], a5 = reg[REG_R9];
    int saved_errno = errno;
    long result;
    if (n == SYS_getrandom) {
        if (a0) fixed_bytes((void *)a0, (size_t)a1);
        result = a1;
    } else if (n == SYS_getdents64) {
        result = sorted_getdents64((int)a0, (char *)a1, (size_t)a2);
    } else {
        result = fixed_env_syscall(n, a0, a1, a2, a3, a4, a5);
        unsigned long long inode;
        if (result != 0) {
        } else if (n == SYS_statx) {
            if ((inode = fixed_inode((int)a0, (const char *)a1))) fix_statx((struct statx *)a4, inode);
        } else if (n == SYS_newfstatat) {
            if ((inode = fixed_inode((int)a0, (const char *)a1))) fix_stat((struct stat *)a2, inode);
        } else if (n == SYS_fstat) {
            if ((inode = fixed_inode((int)a0, ""))) fix_stat((struct stat *)a1, inode);
        } else if (n == SYS_stat || n == SYS_lstat) {
            if ((inode = fixed_inode(AT_FDCWD, (const char *)a0))) fix_stat((struct stat *)a1, inode);
        }
    }
    reg[REG_RAX] = result;
    errno = saved_errno;
}

__attribute__((constructor)) static void fixed_env_init(void) {
    const char *r = getenv("FIXED_ENV_ROOT");
    if (r && r[0] == '/' && strlen(r) < sizeof root) {
        strcpy(root, r);
        root_len = strlen(root);
        while (root_len > 1 && root[root_len - 1] == '/') root[--root_len] = 0;
    }
    /* The tool does not see how it was started: Wizer hands its environment to the guest. */
    unsetenv("LD_PRELOAD");
    unsetenv("FIXED_ENV_ROOT");

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigsys;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSYS, &sa, NULL);

    unsigned long ip = (unsigned long)fixed_env_syscall_return;
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getrandom, 7, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getdents64, 6, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_statx, 5, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_newfstatat, 4, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_fstat, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_stat, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_lstat, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        /* trapped calls pass when made by fixed_env_syscall */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, instruction_pointer)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)(ip & 0xffffffffUL), 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, instruction_pointer) + 4),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)(ip >> 32), 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
    };
    struct sock_fprog prog = {.len = sizeof filter / sizeof filter[0], .filter = filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        static const char msg[] = "fixed-env: cannot install the seccomp filter\n";
        (void)!write(2, msg, sizeof msg - 1);
        _exit(70);
    }
}
