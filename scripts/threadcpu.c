// LD_PRELOAD shim for measuring, not part of exfilwatch: when a thread's start routine
// returns (and at process exit, for the main thread) it prints the thread's name and CPU time
// (user and system, getrusage(RUSAGE_THREAD)) to standard error as
//     threadcpu NAME user SECONDS sys SECONDS
// scripts/abba.py --threads builds it (cc -O2 -shared -fPIC) and reads those lines.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
struct arg { void *(*fn)(void *); void *a; };
static void report(void) {
  struct rusage r; char name[32] = "?";
  getrusage(RUSAGE_THREAD, &r);
  pthread_getname_np(pthread_self(), name, sizeof name);
  fprintf(stderr, "threadcpu %s user %.4f sys %.4f\n", name,
          r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6, r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6);
}
static void *tramp(void *p) {
  struct arg a = *(struct arg *)p; free(p);
  void *ret = a.fn(a.a);
  report();
  return ret;
}
int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *a) {
  static int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
  if (!real) real = dlsym(RTLD_NEXT, "pthread_create");
  struct arg *p = malloc(sizeof *p); p->fn = fn; p->a = a;
  return real(t, attr, tramp, p);
}
__attribute__((destructor)) static void fin(void) { report(); }
