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

static void install(int signo) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (signo != 0 && sigaction(signo, &sa, NULL) != 0) {
        cv_msg_print("carve: cannot handle signal %d (signal= ignored)\n", signo);
        signo = 0;
    }
    if (cv_signal_installed != 0 && cv_signal_installed != signo)
        signal(cv_signal_installed, SIG_DFL); /* the old trigger goes */
    cv_signal_installed = cv_options.signal; /* even when refused: said once */
}

void cv_signal_safe_point(void) {
    if (cv_options.signal != cv_signal_installed) {
        if (!atomic_load_explicit(&sig.ready, memory_order_relaxed)) {
            sem_init(&sig.wake, 0, 0);
            atomic_store_explicit(&sig.ready, true, memory_order_release);
        }
        install(cv_options.signal);
    }
    if (cv_signal_installed != 0 && !atomic_load_explicit(&sig.thread_failed, memory_order_relaxed)) {
        bool down = false;
        if (atomic_compare_exchange_strong(&sig.thread_up, &down, true) &&
            !cv_os_thread_start(service)) {
            atomic_store_explicit(&sig.thread_failed, true, memory_order_relaxed);
            atomic_store(&sig.thread_up, false);
        }
    }
    if (atomic_load_explicit(&sig.thread_failed, memory_order_relaxed))
        answer();
}

/* The thread did not survive the fork, the handler did: the next safe
 * point installs it again and starts a thread. */
void cv_signal_fork_child(void) {
    if (atomic_load_explicit(&sig.ready, memory_order_relaxed))
        sem_init(&sig.wake, 0, 0);
    atomic_store(&sig.thread_up, false);
    cv_signal_installed = 0;
}
