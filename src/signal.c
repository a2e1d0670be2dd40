/*
 * signal.c: the operator's trigger, CARVE_OPTIONS=signal=SIGUSR2.
 *
 * On that signal carve prints its statistics on stderr and gives free
 * memory back (as malloc_trim does for the slices and the large cache), so
 * that someone watching a running program can ask it what it holds
 * without a debugger or a rebuild. None of that is async-signal-safe (it
 * takes carve's locks), so the handler only posts a semaphore (sem_post
 * is async-signal-safe) and a thread of carve's own, carve-signal, does
 * the work: a program that waits in poll or a join still answers.
 *
 * The handler is installed and the thread started from the entry points'
 * safe points (cv_signal_safe_point: no lock held, pthread_create may
 * call malloc), the first one after the option is seen, at start-up or
 * from carve_option_set. If the thread cannot start (a seccomp filter),
 * the safe points do the work themselves when the signal came. A fork
 * child has no such thread until its next safe point starts one.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <semaphore.h>
#include <signal.h>

/* the signal whose handler is in place (0: none): the safe points compare
 * it with the option, so that a change is seen at the next one */
int cv_signal_installed;
_Atomic bool cv_signal_pending; /* a signal came and is not answered yet */

static struct {
    _Atomic bool thread_up;    /* carve-signal runs (or is being started) */
    _Atomic bool thread_failed;
    sem_t wake;
    _Atomic bool ready;        /* wake is initialised */
} sig;

static void on_signal(int signo) {
    (void)signo;
    int saved = errno;
    atomic_store_explicit(&cv_signal_pending, true, memory_order_relaxed);
    if (atomic_load_explicit(&sig.ready, memory_order_acquire))
        sem_post(&sig.wake);
    errno = saved;
}

/* What the signal asks for; once per signal (or burst of them). */
static void answer(void) {
    if (!atomic_exchange_explicit(&cv_signal_pending, false, memory_order_acq_rel))
        return;
    cv_stats_print();
    cv_purge_trim();
}

static void *service(void *arg) {
    (void)arg;
    cv_os_thread_name("carve-signal");
    for (;;) {
        while (sem_wait(&sig.wake) != 0) {
        }
        answer();
    }
    return NULL;
}

/* The trigger moves to signo: the action the program had for the old
 * signal comes back, and the new one's is kept for when it goes. */
static void install(int signo) {
    static struct sigaction before; /* the program's action for the signal handled */
    int old = CV_PEEK(cv_signal_installed);
    if (old > 0)
        sigaction(old, &before, NULL);
    if (signo != 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        if (sigaction(signo, &sa, &before) != 0)
            cv_msg_print("carve: cannot handle signal %d (signal= ignored)\n", signo);
    }
    CV_SET(cv_signal_installed, signo); /* even when refused: said once */
}

_Atomic bool cv_signal_restart; /* a fork child wants its thread */

void cv_signal_safe_point(void) {
    static _Atomic bool busy; /* one thread sets up at a time; the others go on */
    if (atomic_exchange_explicit(&busy, true, memory_order_acquire))
        return;
    if (!atomic_load_explicit(&sig.ready, memory_order_relaxed)) {
        sem_init(&sig.wake, 0, 0);
        atomic_store_explicit(&sig.ready, true, memory_order_release);
    }
    if (cv_options.signal != CV_PEEK(cv_signal_installed))
        install(cv_options.signal);
    atomic_store_explicit(&cv_signal_restart, false, memory_order_relaxed);
    if (CV_PEEK(cv_signal_installed) != 0 &&
        !atomic_load_explicit(&sig.thread_failed, memory_order_relaxed)) {
        bool down = false;
        if (atomic_compare_exchange_strong(&sig.thread_up, &down, true) &&
            !cv_os_thread_start(service)) {
            atomic_store_explicit(&sig.thread_failed, true, memory_order_relaxed);
            atomic_store(&sig.thread_up, false);
        }
    }
    atomic_store_explicit(&busy, false, memory_order_release);
    if (atomic_load_explicit(&sig.thread_failed, memory_order_relaxed))
        answer();
}

/* The thread did not survive the fork, the handler did: the next safe
 * point starts a thread. */
void cv_signal_fork_child(void) {
    if (atomic_load_explicit(&sig.ready, memory_order_relaxed))
        sem_init(&sig.wake, 0, 0);
    atomic_store(&sig.thread_up, false);
    if (CV_PEEK(cv_signal_installed) != 0)
        atomic_store_explicit(&cv_signal_restart, true, memory_order_relaxed);
}
