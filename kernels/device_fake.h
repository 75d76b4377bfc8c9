/* device_fake.h: a fake device for tests (test builds only, WEAVER_TEST_BACKENDS): the device
 * layer's operations run on the host through the plain-C references and device_math.h, with host
 * memory standing in for device memory, a given free-memory figure, and injected faults (out of
 * memory at the Nth arena allocation, a sticky error at the Nth operation). It lets the host
 * logic above the device layer (budget sizing, split-and-retry, sticky errors, buffer reuse) run
 * in CI. Must never be reachable from a production configuration. */
#ifndef WEAVER_DEVICE_FAKE_H
#define WEAVER_DEVICE_FAKE_H

#include "kernels/device.h"

typedef struct FakeDeviceConfig {
    size_t total_bytes;    /* 0 = 16 GiB */
    size_t free_bytes;     /* free at open; 0 = total_bytes */
    int oom_at_alloc;      /* the Nth arena allocation (1-based, counted over the device's life)
                            * fails with DEV_ENOMEM; 0 = never */
    int oom_count;         /* how many allocations fail from there on (0 = 1) */
    int sticky_at_op;      /* the Nth queued operation fails with DEV_ESTICKY; 0 = never */
    int oom_at_op;         /* the Nth queued operation fails with DEV_ENOMEM (out of memory in a
                            * step: the context stays usable); 0 = never */
    int oom_op_count;      /* how many operations fail from there on (0 = 1) */
} FakeDeviceConfig;

typedef struct FakeDeviceStats {
    int device_mallocs;    /* "device" allocations made: the weights and one arena per stream */
    int device_frees;
    int streams_created;
    int arena_allocs;      /* dev_arena_alloc calls that reached the device */
    int ooms_injected;
    int ops;               /* operations queued (copies and kernels) */
    int syncs;
    size_t bytes_live;
} FakeDeviceStats;

#ifdef WEAVER_TEST_BACKENDS
/* The table; devices opened through it take the configuration set last (all zero = defaults). */
const DeviceOps *device_fake_ops(void);
void device_fake_configure(const FakeDeviceConfig *c);
/* The configuration from "free_mib=N,oom_at=N,oom_count=N,sticky_at=N,oom_op=N,oom_op_count=N"
 * (the engine's $WEAVER_TEST_FAKE_DEVICE); unknown text ends the parse. */
void device_fake_configure_spec(const char *spec);
/* Counters of device d (opened through device_fake_ops). */
void device_fake_stats(const Device *d, FakeDeviceStats *out);
/* For the fake's other operation tables (kernels/decoder_fake.c): counts one queued operation and
 * injects the configured sticky error. */
int device_fake_op(DevStream *s, const char *name);
#endif

#endif
