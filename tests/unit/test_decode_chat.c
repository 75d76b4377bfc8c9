/* test_decode_chat.c: chat-template recognition and rendering without a model file. The
 * byte-exact comparison with llama.cpp lives in tests/reference/test_decode_spm_chat.py (recorded
 * fixtures); this pins the families a template's marker text selects and the refusal of the rest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/decode/chat.h"

static ChatKind detect(const char *t) {
    ChatTemplate ct;
    chat_detect(t, strlen(t), &ct);
    return ct.kind;
}

static char *render(const char *t, const GenMessage *m, int n, char *err) {
    ChatTemplate ct;
    chat_detect(t, strlen(t), &ct);
    return chat_render(&ct, m, n, NULL, NULL, err, 256);
}

static const GenMessage CONV[] = {{"system", "Be terse.", 0}, {"user", "Hi ", 0}, {"assistant", " Hello! ", 0}, {"user", "2+2?", 0}};

static void llama2_and_mistral_families_are_recognised_by_their_markers(void **state) {
    (void)state;
    assert_int_equal(detect("{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }} <<SYS>>"), CHAT_LLAMA2_SYS_STRIP);
    assert_int_equal(detect("{{- bos_token + '[INST] ' + m['content'] -}} <<SYS>>"), CHAT_LLAMA2_SYS_BOS);
    assert_int_equal(detect("{{ '[INST] <<SYS>>\\n' + m['content'] }}"), CHAT_LLAMA2_SYS);
    assert_int_equal(detect("{{ '[INST] ' + m['content'] + ' [/INST]' }}"), CHAT_LLAMA2);
    assert_int_equal(detect("{{ ' [INST] ' + system_message + m['content'] }}"), CHAT_MISTRAL_V1);
    assert_int_equal(detect("{{ '[AVAILABLE_TOOLS]' }}{{ '[INST]' + m['content'] }}"), CHAT_MISTRAL_V3);
    assert_int_equal(detect("{{ \"[AVAILABLE_TOOLS]\" }}{{ \"[INST]\" + m['content'] }}"), CHAT_MISTRAL_V3_TEKKEN);
    assert_int_equal(detect("{{ '[SYSTEM_PROMPT] ' }}{{ '[INST] ' }}"), CHAT_MISTRAL_V7);
    assert_int_equal(detect("{{ '<|start_header_id|>' + r + '<|end_header_id|>' }}"), CHAT_LLAMA3);
    assert_int_equal(detect("{{ '<|im_start|>' + r }}"), CHAT_CHATML);
}

static void llama2_chat_renders_sys_block_and_strips_messages(void **state) {
    (void)state;
    char err[256];
    char *s = render("[INST] <<SYS>> content.strip()", CONV, 4, err);
    assert_non_null(s);
    assert_string_equal(s, "[INST] <<SYS>>\nBe terse.\n<</SYS>>\n\nHi [/INST]Hello!</s>[INST] 2+2? [/INST]");
    free(s);
}

static void mistral_v7_renders_system_prompt_block(void **state) {
    (void)state;
    char err[256];
    char *s = render("[SYSTEM_PROMPT] [INST]", CONV, 4, err);
    assert_non_null(s);
    assert_string_equal(s, "[SYSTEM_PROMPT] Be terse.[/SYSTEM_PROMPT][INST] Hi [/INST]  Hello! </s>[INST] 2+2?[/INST]");
    free(s);
}

/* The tokenizer keeps special-token text inside these spans as text (parse_special: false), so a
 * span must cover exactly a message's text as rendered: every family, trimmed or not. */
static void each_message_text_is_reported_where_it_was_rendered(void **state) {
    (void)state;
    static const char *templates[] = {
        "<|im_start|>{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nDefault<|im_end|>\n' }}",
        "<|start_header_id|><|end_header_id|>", "[INST] content.strip()", "bos_token + '[INST] <<SYS>>",
        "[INST] <<SYS>>", "[INST]", "' [INST] ' + system_message", "[AVAILABLE_TOOLS][INST]",
        "[AVAILABLE_TOOLS] \"[INST]\"", "[SYSTEM_PROMPT] [INST]"};
    static const GenMessage conv[] = {{"user", " <|im_end|> hi ", 0}, {"assistant", "\n[/INST] ok\n", 0},
                                      {"system", "", 0}, {"user", "<s>2+2?", 0}};
    unsigned seen = 0;
    for (size_t t = 0; t < sizeof templates / sizeof templates[0]; t++) {
        ChatTemplate ct;
        chat_detect(templates[t], strlen(templates[t]), &ct);
        assert_int_not_equal(ct.kind, CHAT_NONE);
        seen |= 1u << ct.kind;
        ChatSpan sp[4];
        memset(sp, 0xff, sizeof sp);
        char err[256];
        char *s = chat_render(&ct, conv, 4, sp, NULL, err, sizeof err);
        assert_non_null(s);
        for (int i = 0; i < 4; i++) {
            const char *c = conv[i].content;
            size_t n = strlen(c);
            int trimmed = ct.kind == CHAT_LLAMA3 || ct.kind == CHAT_LLAMA2_SYS_STRIP ||
                          (ct.kind == CHAT_MISTRAL_V3 && strcmp(conv[i].role, "assistant") == 0);
            while (trimmed && n && (*c == ' ' || *c == '\n')) { c++; n--; }
            while (trimmed && n && (c[n - 1] == ' ' || c[n - 1] == '\n')) n--;
            if (sp[i].off > strlen(s) || sp[i].len != n || memcmp(s + sp[i].off, c, n) != 0)
                fail_msg("%s: message %d reported at [%zu, +%zu) of \"%s\"", chat_kind_name(ct.kind), i, sp[i].off,
                         sp[i].len, s);
        }
        free(s);
    }
    assert_int_equal(seen, ((1u << (CHAT_MISTRAL_V7 + 1)) - 1) & ~1u); /* every family */
}

static void unknown_template_is_a_clear_error_not_a_guess(void **state) {
    (void)state;
    char err[256] = "";
    assert_null(render("{% for m in messages %}### {{ m['role'] }}{% endfor %}", CONV, 4, err));
    assert_non_null(strstr(err, "not one this engine recognises"));
    /* Phi-4 and SmolVLM share <|im_start|> but are not ChatML */
    assert_int_equal(detect("<|im_start|>{{ r }}<|im_sep|>"), CHAT_NONE);
    assert_int_equal(detect("<|im_start|>User:<end_of_utterance>"), CHAT_NONE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(llama2_and_mistral_families_are_recognised_by_their_markers),
        cmocka_unit_test(llama2_chat_renders_sys_block_and_strips_messages),
        cmocka_unit_test(mistral_v7_renders_system_prompt_block),
        cmocka_unit_test(each_message_text_is_reported_where_it_was_rendered),
        cmocka_unit_test(unknown_template_is_a_clear_error_not_a_guess),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
