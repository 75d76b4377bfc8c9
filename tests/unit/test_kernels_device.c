/* test_kernels_device.c: the device layer's host logic, through the fake device (test builds):
 * token budgets from a given free-memory figure, what each CUDA error number means (out of
 * memory vs a lost context vs no device), out of memory at the Nth arena allocation, a sticky
 * error that refuses everything after it and keeps its first cause, one arena and one stream
 * reused across batches, and `cuda:N` on this machine (no GPU here: the runtime's own error). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "kernels/device_fake.h"
#include "kernels/device_impl.h"

#ifdef WEAVER_TEST_BACKENDS

#define MiB ((size_t)1 << 20)
#define GiB ((size_t)1 << 30)

static void budget_comes_from_free_memory_less_workspaces(void **state)
{
    (void)state;
    /* 10 GiB free, 1 KiB a token, one worker with 1 GiB fixed: (10 - 1) GiB * 0.9 / 1 KiB */
    int t = dev_budget_tokens(10 * GiB, 1 * GiB, 1024, 1, 0.9, 0, 1);
    assert_int_equal(t, (int)((double)(9 * GiB) * 0.9 / 1024));
    /* four workers share it: each gets a quarter of what is left after all four workspaces */
    int t4 = dev_budget_tokens(10 * GiB, 1 * GiB, 1024, 4, 0.9, 0, 1);
    assert_int_equal(t4, (int)((double)(6 * GiB) * 0.9 / 4 / 1024));
    /* the config's cap wins when the device could take more */
    assert_int_equal(dev_budget_tokens(10 * GiB, 1 * GiB, 1024, 1, 0.9, 16384, 1), 16384);
    /* not even one longest sequence fits: 0, for the caller to refuse */
    assert_int_equal(dev_budget_tokens(100 * MiB, 90 * MiB, 1 << 20, 1, 0.9, 0, 512), 0);
    assert_int_equal(dev_budget_tokens(100 * MiB, 200 * MiB, 1024, 1, 0.9, 0, 1), 0);
}

static void cuda_errors_are_classified_by_number(void **state)
{
    (void)state;
    assert_int_equal(dev_status_from_cuda(0), DEV_OK);
    assert_int_equal(dev_status_from_cuda(2), DEV_ENOMEM);     /* cudaErrorMemoryAllocation */
    assert_int_equal(dev_status_from_cuda(700), DEV_ESTICKY);  /* illegal address */
    assert_int_equal(dev_status_from_cuda(719), DEV_ESTICKY);  /* launch failure */
    assert_int_equal(dev_status_from_cuda(716), DEV_ESTICKY);  /* misaligned address */
    assert_int_equal(dev_status_from_cuda(35), DEV_ENODEV);    /* insufficient driver */
    assert_int_equal(dev_status_from_cuda(100), DEV_ENODEV);   /* no device */
    assert_int_equal(dev_status_from_cuda(101), DEV_ENODEV);   /* invalid device ordinal */
    assert_int_equal(dev_status_from_cuda(1), DEV_EFAIL);      /* invalid value: a bug, not sticky */
    assert_string_equal(dev_status_name(DEV_ESTICKY), "DEV_ESTICKY");
}

static Device *open_fake(const FakeDeviceConfig *c)
{
    device_fake_configure(c);
    char err[256];
    int st = 1;
    Device *d = device_open(device_fake_ops(), 0, &st, err, sizeof err);
    assert_non_null(d);
    assert_int_equal(st, DEV_OK);
    return d;
}

static void oom_at_the_nth_allocation_leaves_the_device_usable(void **state)
{
    (void)state;
    Device *d = open_fake(&(FakeDeviceConfig){.oom_at_alloc = 3});
    char err[256];
    DevStream *s = dev_stream_new(d, 64 * 1024, 4096, err, sizeof err);
    assert_non_null(s);
    void *p;
    assert_int_equal(dev_arena_alloc(s, 100, &p), DEV_OK);
    assert_int_equal(dev_arena_alloc(s, 100, &p), DEV_OK);
    assert_int_equal(dev_arena_alloc(s, 100, &p), DEV_ENOMEM);
    assert_null(p);
    assert_non_null(strstr(device_errstr(d), "allocation 3"));
    assert_false(device_lost(d));
    assert_int_equal(dev_arena_alloc(s, 100, &p), DEV_OK); /* the next one works */
    /* a request bigger than the arena is out of memory too, naming the sizes */
    assert_int_equal(dev_arena_alloc(s, 1 << 20, &p), DEV_ENOMEM);
    assert_non_null(strstr(device_errstr(d), "1048576 bytes asked"));
    assert_false(device_lost(d));
    dev_stream_free(s);
    device_close(d);
}

static void a_sticky_error_refuses_everything_after_it(void **state)
{
    (void)state;
    Device *d = open_fake(&(FakeDeviceConfig){.sticky_at_op = 2});
    char err[256];
    DevStream *s = dev_stream_new(d, 64 * 1024, 4096, err, sizeof err);
    float x[4] = {1, 2, 3, 4};
    assert_int_equal(dev_gelu(s, x, 4), DEV_OK);
    assert_int_equal(dev_gelu(s, x, 4), DEV_ESTICKY);
    assert_true(device_lost(d));
    assert_non_null(strstr(device_errstr(d), "illegal memory access"));
    assert_non_null(strstr(device_errstr(d), "fake:0"));
    /* nothing runs any more, and the message still carries the first cause */
    FakeDeviceStats st;
    device_fake_stats(d, &st);
    int ops = st.ops;
    void *p;
    assert_int_equal(dev_gelu(s, x, 4), DEV_ESTICKY);
    assert_int_equal(dev_arena_alloc(s, 16, &p), DEV_ESTICKY);
    assert_int_equal(dev_sync(s), DEV_ESTICKY);
    device_fake_stats(d, &st);
    assert_int_equal(st.ops, ops);
    assert_non_null(strstr(device_errstr(d), "illegal memory access"));
    assert_null(dev_stream_new(d, 1024, 16, err, sizeof err));
    dev_stream_free(s);
    device_close(d);
}

static void one_arena_is_reused_batch_after_batch(void **state)
{
    (void)state;
    Device *d = open_fake(NULL);
    char err[256];
    DevStream *s = dev_stream_new(d, 1 << 20, 4096, err, sizeof err);
    FakeDeviceStats before, after;
    device_fake_stats(d, &before);
    void *first = NULL;
    for (int batch = 0; batch < 5; batch++) {
        dev_arena_reset(s);
        void *a, *b;
        assert_int_equal(dev_arena_alloc(s, 1000, &a), DEV_OK);
        assert_int_equal(dev_arena_alloc(s, 3, &b), DEV_OK);
        assert_int_equal((uintptr_t)a % DEV_ALIGN, 0);
        assert_int_equal((uintptr_t)b % DEV_ALIGN, 0);
        assert_int_equal((char *)b - (char *)a, 1024);
        if (!first) first = a;
        assert_ptr_equal(a, first);
        assert_int_equal(dev_sync(s), DEV_OK);
    }
    device_fake_stats(d, &after);
    assert_int_equal(after.device_mallocs, before.device_mallocs); /* nothing allocated per batch */
    assert_int_equal(after.streams_created, 1);
    dev_stream_free(s);
    device_close(d);
}

static void weights_are_one_allocation_uploaded_once(void **state)
{
    (void)state;
    Device *d = open_fake(&(FakeDeviceConfig){.free_bytes = 10 * MiB});
    assert_int_equal(device_weights_alloc(d, 4 * MiB), DEV_OK);
    assert_int_equal(device_weights_alloc(d, 4 * MiB), DEV_EINVAL); /* only one */
    size_t fr, tot;
    assert_int_equal(device_mem_info(d, &fr, &tot), DEV_OK);
    assert_int_equal(fr, 6 * MiB);
    char err[256];
    assert_null(dev_stream_new(d, 8 * MiB, 16, err, sizeof err)); /* does not fit: said so */
    assert_non_null(strstr(err, "8388608-byte workspace arena"));
    char buf[16] = "0123456789abcdef";
    assert_int_equal(device_upload(d, (char *)device_weights(d) + 4 * MiB - 8, buf, 16), DEV_EINVAL);
    assert_int_equal(device_upload(d, device_weights(d), buf, 16), DEV_OK);
    device_close(d);
}

static void cuda_device_on_this_machine_is_refused_with_the_runtime_reason(void **state)
{
    (void)state;
    char err[512];
    int n = device_cuda_count(err, sizeof err);
    int st = 0;
    Device *d = device_open(device_cuda_ops(), n > 0 ? n : 0, &st, err, sizeof err);
    if (d) { /* a machine with a GPU: cuda:N for N = count must still fail */
        device_close(d);
        fail_msg("cuda:%d opened with %d devices", n > 0 ? n : 0, n);
    }
    assert_int_equal(st, DEV_ENODEV);
    fprintf(stderr, "cuda:%d -> %s\n", n > 0 ? n : 0, err);
    if (!device_cuda_ops())
        assert_non_null(strstr(err, "no CUDA"));
    else if (n < 0)
        assert_non_null(strstr(err, "cudaGetDeviceCount"));
    else
        assert_non_null(strstr(err, "asked for"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(budget_comes_from_free_memory_less_workspaces),
        cmocka_unit_test(cuda_errors_are_classified_by_number),
        cmocka_unit_test(oom_at_the_nth_allocation_leaves_the_device_usable),
        cmocka_unit_test(a_sticky_error_refuses_everything_after_it),
        cmocka_unit_test(one_arena_is_reused_batch_after_batch),
        cmocka_unit_test(weights_are_one_allocation_uploaded_once),
        cmocka_unit_test(cuda_device_on_this_machine_is_refused_with_the_runtime_reason),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#else
int main(void)
{
    puts("skipped: the fake device is in test builds only (-DWEAVER_TEST_BACKENDS=ON)");
    return 77;
}
#endif
