//! The seccomp allow-list: the system calls an instance may make, each with the reason it is
//! needed. Everything else fails with EPERM — among them mount, umount, pivot_root, unshare,
//! setns, ptrace, process_vm_*, bpf, perf_event_open, kexec_*, init/finit/delete_module,
//! keyctl, add_key, request_key, userfaultfd, io_uring_*, open_by_handle_at, swapon/off,
//! reboot, acct, settimeofday, clock_settime. `clone` is allowed only without namespace
//! flags, and `clone3` answers ENOSYS so that libc falls back to the `clone` we can inspect.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch};

use crate::error::{SandboxError, setup};

/// (syscall, reason).
pub const ALLOWED: &[(i64, &str)] = &[
    (libc::SYS_read, "read files, pipes and sockets"),
    (libc::SYS_write, "write files, pipes and sockets"),
    (libc::SYS_readv, "vectored reads"),
    (libc::SYS_writev, "vectored writes"),
    (libc::SYS_pread64, "positioned reads (databases, Python)"),
    (libc::SYS_pwrite64, "positioned writes"),
    (libc::SYS_preadv, "positioned vectored reads"),
    (libc::SYS_pwritev, "positioned vectored writes"),
    (libc::SYS_open, "open files"),
    (libc::SYS_openat, "open files relative to a directory"),
    (libc::SYS_openat2, "open files with resolve restrictions"),
    (libc::SYS_close, "close descriptors"),
    (libc::SYS_close_range, "close many descriptors at exec"),
    (libc::SYS_stat, "file metadata"),
    (libc::SYS_fstat, "file metadata of a descriptor"),
    (libc::SYS_lstat, "link metadata"),
    (libc::SYS_newfstatat, "file metadata relative to a directory"),
    (libc::SYS_statx, "extended file metadata"),
    (libc::SYS_statfs, "filesystem metadata"),
    (libc::SYS_fstatfs, "filesystem metadata of a descriptor"),
    (libc::SYS_lseek, "seek in files"),
    (libc::SYS_mmap, "map memory and files"),
    (libc::SYS_mprotect, "change memory protection (loaders, JITs)"),
    (libc::SYS_munmap, "unmap memory"),
    (libc::SYS_mremap, "grow mappings (allocators)"),
    (libc::SYS_madvise, "memory hints (allocators)"),
    (libc::SYS_msync, "flush mapped files"),
    (libc::SYS_mincore, "query residency (allocators)"),
    (libc::SYS_mlock, "lock pages (crypto libraries)"),
    (libc::SYS_munlock, "unlock pages"),
    (libc::SYS_brk, "grow the heap"),
    (libc::SYS_rt_sigaction, "install signal handlers"),
    (libc::SYS_rt_sigprocmask, "block signals"),
    (libc::SYS_rt_sigreturn, "return from signal handlers"),
    (libc::SYS_rt_sigsuspend, "wait for signals"),
    (libc::SYS_rt_sigtimedwait, "wait for signals with a timeout"),
    (libc::SYS_rt_sigqueueinfo, "queue signals to own processes"),
    (libc::SYS_sigaltstack, "alternate signal stacks (runtimes)"),
    (libc::SYS_ioctl, "terminal and socket controls (never TIOCSTI or TIOCLINUX: a rule refuses them)"),
    (libc::SYS_access, "check file access"),
    (libc::SYS_faccessat, "check file access relative to a directory"),
    (libc::SYS_faccessat2, "check file access with flags"),
    (libc::SYS_pipe, "pipes"),
    (libc::SYS_pipe2, "pipes with flags"),
    (libc::SYS_select, "wait on descriptors"),
    (libc::SYS_pselect6, "wait on descriptors with a signal mask"),
    (libc::SYS_poll, "wait on descriptors"),
    (libc::SYS_ppoll, "wait on descriptors with a signal mask"),
    (libc::SYS_epoll_create, "event loops"),
    (libc::SYS_epoll_create1, "event loops"),
    (libc::SYS_epoll_ctl, "event loops"),
    (libc::SYS_epoll_wait, "event loops"),
    (libc::SYS_epoll_pwait, "event loops"),
    (libc::SYS_epoll_pwait2, "event loops"),
    (libc::SYS_eventfd, "event notification"),
    (libc::SYS_eventfd2, "event notification"),
    (libc::SYS_timerfd_create, "timers as descriptors"),
    (libc::SYS_timerfd_settime, "timers as descriptors"),
    (libc::SYS_timerfd_gettime, "timers as descriptors"),
    (libc::SYS_signalfd, "signals as descriptors"),
    (libc::SYS_signalfd4, "signals as descriptors"),
    (libc::SYS_inotify_init, "watch files (the launcher, Jupyter)"),
    (libc::SYS_inotify_init1, "watch files"),
    (libc::SYS_inotify_add_watch, "watch files"),
    (libc::SYS_inotify_rm_watch, "stop watching files"),
    (libc::SYS_sched_yield, "yield the processor"),
    (libc::SYS_sched_getaffinity, "count usable processors"),
    (libc::SYS_sched_setaffinity, "pin threads (numeric libraries)"),
    (libc::SYS_sched_getparam, "scheduling queries"),
    (libc::SYS_sched_getscheduler, "scheduling queries"),
    // Without CAP_SYS_NICE these only keep or lower a thread's own policy; libzmq (Jupyter's
    // kernels) sets its I/O threads' parameters and aborts if it may not.
    (libc::SYS_sched_setscheduler, "set own threads' scheduling policy (libzmq)"),
    (libc::SYS_sched_setparam, "set own threads' scheduling parameters (libzmq)"),
    (libc::SYS_sched_get_priority_max, "scheduling queries"),
    (libc::SYS_sched_get_priority_min, "scheduling queries"),
    (libc::SYS_nanosleep, "sleep"),
    (libc::SYS_clock_nanosleep, "sleep on a clock"),
    (libc::SYS_clock_gettime, "read clocks"),
    (libc::SYS_clock_getres, "clock resolution"),
    (libc::SYS_gettimeofday, "read the time"),
    (libc::SYS_time, "read the time"),
    (libc::SYS_getitimer, "interval timers"),
    (libc::SYS_setitimer, "interval timers"),
    (libc::SYS_alarm, "alarms"),
    (libc::SYS_timer_create, "POSIX timers"),
    (libc::SYS_timer_settime, "POSIX timers"),
    (libc::SYS_timer_gettime, "POSIX timers"),
    (libc::SYS_timer_getoverrun, "POSIX timers"),
    (libc::SYS_timer_delete, "POSIX timers"),
    (libc::SYS_getpid, "own process id"),
    (libc::SYS_getppid, "parent process id"),
    (libc::SYS_gettid, "own thread id"),
    (libc::SYS_getuid, "own user id"),
    (libc::SYS_geteuid, "own effective user id"),
    (libc::SYS_getgid, "own group id"),
    (libc::SYS_getegid, "own effective group id"),
    (libc::SYS_getresuid, "own user ids"),
    (libc::SYS_getresgid, "own group ids"),
    (libc::SYS_getgroups, "own supplementary groups"),
    (libc::SYS_getpgrp, "process group"),
    (libc::SYS_getpgid, "process group of a process"),
    (libc::SYS_setpgid, "job control in shells"),
    (libc::SYS_getsid, "session id"),
    (libc::SYS_setsid, "start a session (daemons, terminals)"),
    (libc::SYS_getrlimit, "read resource limits"),
    (libc::SYS_prlimit64, "read and lower resource limits"),
    (libc::SYS_getrusage, "resource usage"),
    (libc::SYS_times, "process times"),
    (libc::SYS_sysinfo, "memory and uptime figures"),
    (libc::SYS_uname, "system name"),
    (libc::SYS_getpriority, "scheduling priority"),
    (libc::SYS_setpriority, "lower own priority"),
    (libc::SYS_getcpu, "current processor"),
    (libc::SYS_getrandom, "random numbers"),
    (libc::SYS_clone, "threads and processes (namespace flags are refused by a rule)"),
    (libc::SYS_fork, "processes"),
    (libc::SYS_vfork, "processes (posix_spawn)"),
    (libc::SYS_execve, "run programs"),
    (libc::SYS_execveat, "run programs relative to a directory"),
    (libc::SYS_exit, "end a thread"),
    (libc::SYS_exit_group, "end a process"),
    (libc::SYS_wait4, "reap children"),
    (libc::SYS_waitid, "reap children"),
    (libc::SYS_kill, "signal own processes"),
    (libc::SYS_tkill, "signal own threads"),
    (libc::SYS_tgkill, "signal own threads"),
    (libc::SYS_futex, "thread synchronisation"),
    (libc::SYS_futex_waitv, "thread synchronisation"),
    (libc::SYS_set_robust_list, "thread synchronisation"),
    (libc::SYS_get_robust_list, "thread synchronisation"),
    (libc::SYS_set_tid_address, "thread start-up"),
    (libc::SYS_rseq, "restartable sequences (glibc)"),
    (libc::SYS_arch_prctl, "thread-local storage"),
    (libc::SYS_prctl, "process names and no_new_privs (cannot regain privileges)"),
    (libc::SYS_membarrier, "memory barriers (runtimes)"),
    (libc::SYS_dup, "duplicate descriptors"),
    (libc::SYS_dup2, "duplicate descriptors"),
    (libc::SYS_dup3, "duplicate descriptors"),
    (libc::SYS_fcntl, "descriptor flags and locks"),
    (libc::SYS_flock, "file locks"),
    (libc::SYS_fsync, "flush files"),
    (libc::SYS_fdatasync, "flush file data"),
    (libc::SYS_sync_file_range, "flush file ranges"),
    (libc::SYS_truncate, "truncate files"),
    (libc::SYS_ftruncate, "truncate files"),
    (libc::SYS_fallocate, "reserve file space"),
    (libc::SYS_fadvise64, "file access hints"),
    (libc::SYS_getdents, "list directories"),
    (libc::SYS_getdents64, "list directories"),
    (libc::SYS_getcwd, "current directory"),
    (libc::SYS_chdir, "change directory"),
    (libc::SYS_fchdir, "change directory"),
    (libc::SYS_rename, "rename files"),
    (libc::SYS_renameat, "rename files"),
    (libc::SYS_renameat2, "rename files"),
    (libc::SYS_mkdir, "make directories"),
    (libc::SYS_mkdirat, "make directories"),
    (libc::SYS_rmdir, "remove directories"),
    (libc::SYS_link, "hard links"),
    (libc::SYS_linkat, "hard links"),
    (libc::SYS_unlink, "remove files"),
    (libc::SYS_unlinkat, "remove files"),
    (libc::SYS_symlink, "symbolic links"),
    (libc::SYS_symlinkat, "symbolic links"),
    (libc::SYS_readlink, "read links"),
    (libc::SYS_readlinkat, "read links"),
    (libc::SYS_chmod, "file modes"),
    (libc::SYS_fchmod, "file modes"),
    (libc::SYS_fchmodat, "file modes"),
    (libc::SYS_fchown, "file owners (within the instance's ids)"),
    (libc::SYS_fchownat, "file owners"),
    (libc::SYS_chown, "file owners"),
    (libc::SYS_lchown, "file owners"),
    (libc::SYS_umask, "file creation mask"),
    (libc::SYS_utime, "file times"),
    (libc::SYS_utimes, "file times"),
    (libc::SYS_utimensat, "file times"),
    (libc::SYS_futimesat, "file times"),
    (libc::SYS_getxattr, "extended attributes"),
    (libc::SYS_lgetxattr, "extended attributes"),
    (libc::SYS_fgetxattr, "extended attributes"),
    (libc::SYS_listxattr, "extended attributes"),
    (libc::SYS_flistxattr, "extended attributes"),
    (libc::SYS_copy_file_range, "copy files"),
    (libc::SYS_sendfile, "copy files to sockets"),
    (libc::SYS_splice, "move data between pipes"),
    (libc::SYS_tee, "duplicate pipe data"),
    (libc::SYS_memfd_create, "anonymous files (JITs, browsers)"),
    (libc::SYS_socket, "sockets (the instance's only link leads to the endpoint)"),
    (libc::SYS_socketpair, "local socket pairs"),
    (libc::SYS_connect, "connect sockets"),
    (libc::SYS_bind, "bind sockets (loopback servers such as Jupyter)"),
    (libc::SYS_listen, "listen on sockets"),
    (libc::SYS_accept, "accept connections"),
    (libc::SYS_accept4, "accept connections"),
    (libc::SYS_shutdown, "shut sockets"),
    (libc::SYS_sendto, "send"),
    (libc::SYS_recvfrom, "receive"),
    (libc::SYS_sendmsg, "send"),
    (libc::SYS_recvmsg, "receive"),
    (libc::SYS_sendmmsg, "send"),
    (libc::SYS_recvmmsg, "receive"),
    (libc::SYS_getsockname, "socket addresses"),
    (libc::SYS_getpeername, "socket addresses"),
    (libc::SYS_getsockopt, "socket options"),
    (libc::SYS_setsockopt, "socket options"),
    (libc::SYS_shmget, "System V shared memory (own IPC namespace)"),
    (libc::SYS_shmat, "System V shared memory"),
    (libc::SYS_shmdt, "System V shared memory"),
    (libc::SYS_shmctl, "System V shared memory"),
    (libc::SYS_semget, "System V semaphores"),
    (libc::SYS_semop, "System V semaphores"),
    (libc::SYS_semctl, "System V semaphores"),
    (libc::SYS_semtimedop, "System V semaphores"),
    (libc::SYS_msgget, "System V messages"),
    (libc::SYS_msgsnd, "System V messages"),
    (libc::SYS_msgrcv, "System V messages"),
    (libc::SYS_msgctl, "System V messages"),
    (libc::SYS_mq_open, "POSIX message queues"),
    (libc::SYS_mq_unlink, "POSIX message queues"),
    (libc::SYS_mq_timedsend, "POSIX message queues"),
    (libc::SYS_mq_timedreceive, "POSIX message queues"),
    (libc::SYS_capget, "read own capabilities (there are none)"),
    (libc::SYS_setuid, "drop to the own user (no capabilities to change it)"),
    (libc::SYS_setgid, "drop to the own group"),
    (libc::SYS_setreuid, "drop ids"),
    (libc::SYS_setregid, "drop ids"),
    (libc::SYS_setresuid, "drop ids"),
    (libc::SYS_setresgid, "drop ids"),
    (libc::SYS_setgroups, "drop groups"),
    (libc::SYS_set_mempolicy, "memory policy (numeric libraries)"),
    (libc::SYS_get_mempolicy, "memory policy"),
    (libc::SYS_mbind, "memory policy"),
    (libc::SYS_pidfd_open, "process descriptors"),
    (libc::SYS_pidfd_send_signal, "signal own processes"),
    (libc::SYS_restart_syscall, "restart interrupted calls"),
];

const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWTIME) as u64;

/// ioctl requests refused whatever the descriptor: TIOCSTI (push a byte into a terminal's
/// input, as if typed) and TIOCLINUX (console control, which can also inject input).
pub const REFUSED_IOCTLS: &[u64] = &[libc::TIOCSTI, libc::TIOCLINUX];

/// Builds the filter for this architecture.
pub fn program() -> Result<BpfProgram, SandboxError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (syscall, _) in ALLOWED {
        if *syscall == libc::SYS_clone {
            // clone(flags, …): allowed only when no namespace flag is set.
            let condition = SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(NAMESPACE_FLAGS), 0)
                .map_err(|e| setup("build the seccomp filter", e))?;
            rules.insert(*syscall, vec![SeccompRule::new(vec![condition]).map_err(|e| setup("build the seccomp filter", e))?]);
        } else if *syscall == libc::SYS_ioctl {
            // ioctl(fd, cmd, …): never the requests that type into a terminal's input
            // (TIOCSTI) or drive the console (TIOCLINUX). The kernel reads `cmd` as 32 bits,
            // so only those are compared: high bits cannot smuggle it past.
            let mut conditions = Vec::new();
            for refused in REFUSED_IOCTLS {
                conditions.push(
                    SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, *refused)
                        .map_err(|e| setup("build the seccomp filter", e))?,
                );
            }
            rules.insert(*syscall, vec![SeccompRule::new(conditions).map_err(|e| setup("build the seccomp filter", e))?]);
        } else {
            rules.insert(*syscall, Vec::new());
        }
    }
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| setup("build the seccomp filter", e))?;
    let filter = SeccompFilter::new(rules, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow, arch)
        .map_err(|e| setup("build the seccomp filter", e))?;
    let mut program: BpfProgram = filter.try_into().map_err(|e: seccompiler::BackendError| setup("build the seccomp filter", e))?;
    // clone3 passes its flags in memory, where a filter cannot look: make libc fall back.
    program = with_clone3_enosys(program);
    Ok(program)
}

/// Prepends "clone3 → ENOSYS" to a compiled program.
fn with_clone3_enosys(program: BpfProgram) -> BpfProgram {
    use seccompiler::sock_filter;
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JEQ_K: u16 = 0x15;
    const BPF_RET_K: u16 = 0x06;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    let mut head = vec![
        // Load the syscall number (offset 0 of seccomp_data).
        sock_filter { code: BPF_LD_W_ABS, jt: 0, jf: 0, k: 0 },
        sock_filter { code: BPF_JEQ_K, jt: 0, jf: 1, k: libc::SYS_clone3 as u32 },
        sock_filter { code: BPF_RET_K, jt: 0, jf: 0, k: SECCOMP_RET_ERRNO | libc::ENOSYS as u32 },
    ];
    // The compiled program checks the architecture first; ours runs only after it is loaded
    // on this architecture, so the syscall number check is sound to put in front.
    head.extend(program);
    head
}

/// Loads the filter into the calling thread (and what it executes). Must be the last step.
pub fn install() -> Result<(), SandboxError> {
    let program = program()?;
    seccompiler::apply_filter(&program).map_err(|e| setup("install the seccomp filter", e))
}
