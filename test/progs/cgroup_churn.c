/* Touches more memory over time than its cgroup allows, while live memory
 * stays well under it: small blocks freed, then large blocks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
  size_t mib = argc > 1 ? strtoul(argv[1], 0, 10) : 180;
  for (int round = 0; round < 3; round++) {
    size_t n = (mib << 20) / 112; void **p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) { p[i] = malloc(100); memset(p[i], 7, 100); }
    for (size_t i = 0; i < n; i++) free(p[i]);
    free(p);
    usleep(100000);
    size_t m = mib; void **q = malloc(m * sizeof *q);
    for (size_t i = 0; i < m; i++) { q[i] = malloc(1 << 20); memset(q[i], 9, 1 << 20); }
    for (size_t i = 0; i < m; i++) free(q[i]);
    free(q);
    usleep(100000);
  }
  printf("done\n");
  return 0;
}
