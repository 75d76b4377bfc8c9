/* test_pin_compare.c: what counts as "the same embedder" for the cohort pin: identity fields
 * must be equal, the probe vectors within cosine PIN_MIN_COSINE (scale does not matter: an
 * OpenAI service returns unit vectors, the native backend raw pooled ones), and every
 * differing field is listed with its pinned and found value. Pure logic, no Redis. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/pin.h"

#define DIM 16

static EmbedderInfo base_info(void)
{
    EmbedderInfo info = {0};
    strcpy(info.model_id, "all-MiniLM-L6-v2");
    memset(info.snapshot_hash, 'a', 64);
    info.dim = DIM;
    info.pooling = EMBED_POOL_MEAN;
    info.normalize = true;
    info.max_seq_len = 256;
    return info;
}

static void base_probe(float *v)
{
    for (int i = 0; i < DIM; i++)
        v[i] = (float)sin(1.0 + i * 0.7);
}

static const PinDiff *find(const PinReport *r, const char *field)
{
    for (int i = 0; i < r->n_diffs; i++)
        if (strcmp(r->diffs[i].field, field) == 0)
            return &r->diffs[i];
    return NULL;
}

/* Compares `found` against the base identity as the pin. */
static int compare(const EmbedderInfo *found, const float *found_probe, PinReport *rep)
{
    EmbedderInfo pinned_info = base_info();
    float pinned_probe[DIM];
    base_probe(pinned_probe);
    QueuePin pinned, mine;
    assert_int_equal(pin_identity(&pinned_info, pinned_probe, "engine-a", &pinned), 0);
    assert_int_equal(pin_identity(found, found_probe, "engine-b", &mine), 0);
    memset(rep, 0, sizeof *rep);
    int n = pin_compare(&pinned, &mine, rep);
    queue_pin_clear(&pinned);
    queue_pin_clear(&mine);
    return n;
}

static void the_same_identity_and_probe_match(void **state)
{
    (void)state;
    EmbedderInfo info = base_info();
    float p[DIM];
    base_probe(p);
    PinReport rep;
    assert_int_equal(compare(&info, p, &rep), 0);
    assert_true(rep.match);
    assert_true(fabs(rep.cosine - 1.0) < 1e-9);
    assert_string_equal(rep.not_compared, "");
}

static void a_scaled_probe_still_matches_because_cosine_ignores_length(void **state)
{
    (void)state;
    EmbedderInfo info = base_info();
    float p[DIM];
    base_probe(p);
    for (int i = 0; i < DIM; i++)
        p[i] *= 0.125f; /* a unit vector from an OpenAI service vs the raw pooled one */
    PinReport rep;
    assert_int_equal(compare(&info, p, &rep), 0);
    assert_true(rep.match);
}

static void a_probe_just_above_the_threshold_passes_and_just_below_fails(void **state)
{
    (void)state;
    EmbedderInfo info = base_info();
    float base[DIM], p[DIM];
    base_probe(base);
    /* Rotate a little towards an orthogonal direction: cos = 1 / sqrt(1 + t^2). */
    float ortho[DIM] = {0};
    double bb = 0.0, bo = 0.0;
    ortho[0] = 1.0f;
    for (int i = 0; i < DIM; i++)
        bb += (double)base[i] * base[i];
    bo = base[0];
    for (int i = 0; i < DIM; i++)
        ortho[i] -= (float)(bo / bb * base[i]); /* Gram-Schmidt */
    double on = 0.0;
    for (int i = 0; i < DIM; i++)
        on += (double)ortho[i] * ortho[i];
    double scale = sqrt(bb / on);
    const double t_pass = sqrt(1.0 / (0.99995 * 0.99995) - 1.0); /* cos 0.99995 */
    const double t_fail = sqrt(1.0 / (0.9998 * 0.9998) - 1.0);   /* cos 0.9998 */
    PinReport rep;
    for (int i = 0; i < DIM; i++)
        p[i] = (float)(base[i] + t_pass * scale * ortho[i]);
    assert_int_equal(compare(&info, p, &rep), 0);
    assert_true(rep.cosine > 0.9999 && rep.cosine < 0.99999);
    for (int i = 0; i < DIM; i++)
        p[i] = (float)(base[i] + t_fail * scale * ortho[i]);
    assert_int_equal(compare(&info, p, &rep), 1);
    assert_false(rep.match);
    const PinDiff *d = find(&rep, "probe");
    assert_non_null(d);
    assert_non_null(strstr(d->found, "cosine 0.9998"));
}

static void a_nan_in_the_probe_never_matches(void **state)
{
    (void)state;
    EmbedderInfo info = base_info();
    float p[DIM];
    base_probe(p);
    p[3] = NAN;
    PinReport rep;
    assert_int_equal(compare(&info, p, &rep), 1);
    assert_non_null(find(&rep, "probe"));
}

static void every_differing_field_is_listed_with_pinned_and_found_values(void **state)
{
    (void)state;
    EmbedderInfo info = base_info();
    strcpy(info.model_id, "bge-small-en");
    memset(info.snapshot_hash, 'b', 64);
    info.pooling = EMBED_POOL_CLS;
    info.normalize = false;
    info.max_seq_len = 512;
    float p[DIM];
    base_probe(p);
    PinReport rep;
    assert_int_equal(compare(&info, p, &rep), 5);
    assert_false(rep.match);
    const PinDiff *d = find(&rep, "model_id");
    assert_non_null(d);
    assert_string_equal(d->pinned, "all-MiniLM-L6-v2");
    assert_string_equal(d->found, "bge-small-en");
    assert_non_null(d = find(&rep, "snapshot_hash"));
    assert_int_equal(d->pinned[0], 'a');
    assert_int_equal(d->found[0], 'b');
    assert_non_null(d = find(&rep, "pooling"));
    assert_string_equal(d->pinned, "mean");
    assert_string_equal(d->found, "cls");
    assert_non_null(d = find(&rep, "normalize"));
    assert_string_equal(d->pinned, "true");
    assert_string_equal(d->found, "false");
    assert_non_null(d = find(&rep, "max_seq_len"));
    assert_string_equal(d->pinned, "256");
    assert_string_equal(d->found, "512");
    assert_null(find(&rep, "probe")); /* same probe: only identity fields differ */
}

static void another_dimension_lists_dim_and_the_incomparable_probe(void **state)
{
    (void)state;
    EmbedderInfo info = base_info();
    info.dim = 8;
    float p[DIM];
    base_probe(p);
    PinReport rep;
    assert_int_equal(compare(&info, p, &rep), 2);
    const PinDiff *d = find(&rep, "dim");
    assert_non_null(d);
    assert_string_equal(d->pinned, "16");
    assert_string_equal(d->found, "8");
    assert_non_null(d = find(&rep, "probe"));
    assert_string_equal(d->pinned, "16 floats");
    assert_string_equal(d->found, "8 floats");
    assert_true(rep.cosine < -1.0);
}

static void an_unknown_snapshot_hash_is_not_compared_and_says_so(void **state)
{
    (void)state;
    EmbedderInfo info = base_info();
    info.snapshot_hash[0] = '\0'; /* a remote service cannot hash the files behind it */
    float p[DIM];
    base_probe(p);
    PinReport rep;
    assert_int_equal(compare(&info, p, &rep), 0);
    assert_true(rep.match);
    assert_string_equal(rep.not_compared, "snapshot_hash");
}

static void an_unknown_snapshot_hash_does_not_excuse_a_different_probe(void **state)
{
    (void)state;
    EmbedderInfo info = base_info();
    info.snapshot_hash[0] = '\0';
    float p[DIM];
    base_probe(p);
    for (int i = 0; i < DIM; i += 2)
        p[i] = -p[i];
    PinReport rep;
    assert_int_equal(compare(&info, p, &rep), 1);
    assert_non_null(find(&rep, "probe"));
}

static void a_pin_made_with_another_probe_text_is_a_difference(void **state)
{
    (void)state;
    EmbedderInfo info = base_info();
    float p[DIM];
    base_probe(p);
    QueuePin pinned, mine;
    assert_int_equal(pin_identity(&info, p, "a", &pinned), 0);
    assert_int_equal(pin_identity(&info, p, "b", &mine), 0);
    strcpy(pinned.probe_text, "an older probe text");
    PinReport rep;
    memset(&rep, 0, sizeof rep);
    assert_int_equal(pin_compare(&pinned, &mine, &rep), 1);
    assert_string_equal(rep.diffs[0].field, "probe_text");
    assert_string_equal(rep.diffs[0].found, PIN_PROBE_TEXT);
    queue_pin_clear(&pinned);
    queue_pin_clear(&mine);
}

static void identity_copies_the_probe_and_records_who_and_when(void **state)
{
    (void)state;
    EmbedderInfo info = base_info();
    float p[DIM];
    base_probe(p);
    QueuePin id;
    assert_int_equal(pin_identity(&info, p, "host-42", &id), 0);
    p[0] = 99.0f; /* the identity owns its copy */
    assert_true(id.probe[0] != 99.0f);
    assert_int_equal(id.probe_dim, DIM);
    assert_string_equal(id.created_by, "host-42");
    assert_string_equal(id.pooling, "mean");
    assert_string_equal(id.probe_text, PIN_PROBE_TEXT);
    assert_true(id.created_at > 1600000000000LL);
    queue_pin_clear(&id);
    assert_null(id.probe);
    queue_pin_clear(NULL);
}

static void cosine_of_zero_vectors_is_zero_not_nan(void **state)
{
    (void)state;
    float z[4] = {0}, a[4] = {1, 2, 3, 4};
    assert_true(pin_cosine(z, a, 4) == 0.0);
    assert_true(fabs(pin_cosine(a, a, 4) - 1.0) < 1e-12);
    assert_int_equal(PIN_EXIT_MISMATCH, 65);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_same_identity_and_probe_match),
        cmocka_unit_test(a_scaled_probe_still_matches_because_cosine_ignores_length),
        cmocka_unit_test(a_probe_just_above_the_threshold_passes_and_just_below_fails),
        cmocka_unit_test(a_nan_in_the_probe_never_matches),
        cmocka_unit_test(every_differing_field_is_listed_with_pinned_and_found_values),
        cmocka_unit_test(another_dimension_lists_dim_and_the_incomparable_probe),
        cmocka_unit_test(an_unknown_snapshot_hash_is_not_compared_and_says_so),
        cmocka_unit_test(an_unknown_snapshot_hash_does_not_excuse_a_different_probe),
        cmocka_unit_test(a_pin_made_with_another_probe_text_is_a_difference),
        cmocka_unit_test(identity_copies_the_probe_and_records_who_and_when),
        cmocka_unit_test(cosine_of_zero_vectors_is_zero_not_nan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
