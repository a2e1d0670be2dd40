/*
 * spawn: runs one benchmark command and reports its wall time and peak RSS.
 *
 * Why not measure from the Python runner directly: a child forked from a
 * process inherits that process's memory until it execs, and Linux counts
 * it in the child's ru_maxrss, so every workload would seem to use at least
 * the runner's ~20 MiB. This helper is small: what it forks is small too.
 *
 * usage: spawn REPORT PRELOAD PROGRAM [ARGS...]
 *   PRELOAD is the library to put in LD_PRELOAD for PROGRAM, or "-" for none
 *   (the helper itself runs without it). When PROGRAM ends, REPORT gets one
 *   line: "<wall seconds> <ru_maxrss KiB> <wait status>".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct timespec t0, t1;
    struct rusage ru;
    int status;
    pid_t pid;
    FILE *report;

    if (argc < 4) {
        fprintf(stderr, "usage: spawn REPORT PRELOAD|- PROGRAM [ARGS...]\n");
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid = fork();
    if (pid < 0) {
        perror("spawn: fork");
        return 2;
    }
    if (pid == 0) {
        if (strcmp(argv[2], "-") == 0)
            unsetenv("LD_PRELOAD");
        else
            setenv("LD_PRELOAD", argv[2], 1);
        execvp(argv[3], argv + 3);
        fprintf(stderr, "spawn: cannot run %s: %s\n", argv[3], strerror(errno));
        _exit(127);
    }
    while (wait4(pid, &status, 0, &ru) < 0) {
        if (errno != EINTR) {
            perror("spawn: wait4");
            return 2;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    report = fopen(argv[1], "w");
    if (report == NULL) {
        perror("spawn: report file");
        return 2;
    }
    fprintf(report, "%.6f %ld %d\n",
            (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9, ru.ru_maxrss, status);
    return fclose(report) == 0 ? 0 : 2;
}
