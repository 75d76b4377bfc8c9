/* main.c: the weaver-engine command line, and the only place that calls exit().
 *
 *   weaver-engine [run] [--config F] [--workers N]   the daemon
 *   weaver-engine check-config [--config F]          validate and stop (exit 0 or 78)
 *   weaver-engine config-docs                        print the configuration reference
 *   weaver-engine enqueue embed|generate ...         producer side
 *   weaver-engine status [--json] | dead list|requeue
 *   weaver-engine embed ... | tokenize ...           offline corpus embedding
 *   weaver-engine tokenize --model FILE.gguf ...     a GGUF vocabulary's token ids
 *   weaver-engine generate-local ...                 one-off local generation (debugging)
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "engine/cli.h"
#include "engine/engine.h"

static void usage(FILE *out)
{
    fprintf(out,
            "weaver-engine %s: batch embedding and generation from Redis streams\n\n"
            "usage: weaver-engine [run] [--config FILE] [--workers N]\n"
            "       weaver-engine check-config [--config FILE]\n"
            "       weaver-engine config-docs\n"
            "       weaver-engine enqueue embed|generate (--input jobs.jsonl | --text TEXT) [--wait] [--timeout S]\n"
            "       weaver-engine status [--json]\n"
            "       weaver-engine dead list [--count N] | dead requeue (--all | DEAD_ID...)\n"
            "       weaver-engine pin show|verify|reset [--cohort NAME] [--yes]\n"
            "       weaver-engine embed --input corpus.jsonl --output vectors.npy [...]  (see --help)\n"
            "       weaver-engine tokenize ...      weaver-engine generate-local ...\n\n"
            "--config defaults to ./weaver.conf. Exit codes: 0 ok, 64 usage, 65 cohort pin mismatch, 66 model,\n"
            "69 Redis unreachable, "
            "70 internal error, 71 cannot listen on metrics.listen, 75 --wait timed out or (run) the GPU\n"
            "was lost while running, 78 invalid config.\n",
            WEAVER_VERSION);
}

/* Loads the config and prints every warning and problem; returns 0 or CFG_EX_CONFIG. */
static int load_config(const char *path, Config *cfg)
{
    CfgErrors errs = {0};
    int rc = cfg_load(path, cfg, &errs);
    cfg_errors_print(&errs, stderr);
    if (rc != 0)
        fprintf(stderr, "weaver-engine: %d configuration error%s; nothing was started\n", errs.count,
                errs.count == 1 ? "" : "s");
    cfg_errors_free(&errs);
    return rc == 0 ? 0 : CFG_EX_CONFIG;
}

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    int workers = 1;
    /* Sub-commands with their own option parsing get argv untouched from their name on. */
    if (argc > 1 && strcmp(argv[1], "embed") == 0)
        exit(cli_embed_main(argc - 1, argv + 1));
    if (argc > 1 && strcmp(argv[1], "tokenize") == 0) {
        bool gguf = false; /* --model FILE.gguf: the decoder's tokenizer; otherwise the embedder's */
        for (int i = 2; i < argc; i++) gguf = gguf || strcmp(argv[i], "--model") == 0;
        exit(gguf ? cli_tokenize_gguf_main(argc - 1, argv + 1) : cli_tokenize_main(argc - 1, argv + 1));
    }
    if (argc > 1 && strcmp(argv[1], "generate-local") == 0)
        exit(cli_generate_main(argc - 1, argv + 1));

    /* --config and --workers may stand anywhere; the rest belongs to the sub-command. */
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    int nrest = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config_path = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            config_path = argv[i] + 9;
        } else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc) {
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*end || n < 1 || n > ENGINE_WORKERS_MAX) {
                fprintf(stderr, "weaver-engine: --workers must be an integer in [1, %d], not '%s'\n",
                        ENGINE_WORKERS_MAX, argv[i]);
                exit(CLI_EX_USAGE);
            }
            workers = (int)n;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("weaver-engine %s\n", WEAVER_VERSION);
            exit(0);
        } else {
            rest[nrest++] = argv[i];
        }
    }
    const char *cmd = nrest > 0 ? rest[0] : "run";
    if (strcmp(cmd, "config-docs") == 0)
        exit(cfg_write_docs(stdout) == 0 ? 0 : 1);

    bool known = !strcmp(cmd, "run") || !strcmp(cmd, "check-config") || !strcmp(cmd, "enqueue") ||
                 !strcmp(cmd, "status") || !strcmp(cmd, "dead") || !strcmp(cmd, "pin");
    if (!known) {
        fprintf(stderr, "weaver-engine: unknown command or option '%s'\n\n", cmd);
        usage(stderr);
        exit(CLI_EX_USAGE);
    }
    Config cfg;
    int rc = load_config(config_path, &cfg);
    if (rc != 0)
        exit(rc);
    if (strcmp(cmd, "check-config") == 0) {
        fprintf(stderr, "%s: configuration is valid\n", cfg.path ? cfg.path : "weaver.conf");
        rc = 0;
    } else if (strcmp(cmd, "run") == 0) {
        rc = daemon_run(&cfg, workers);
    } else if (strcmp(cmd, "enqueue") == 0) {
        rc = cli_enqueue(&cfg, nrest, rest);
    } else if (strcmp(cmd, "pin") == 0) {
        rc = cli_pin(&cfg, nrest, rest);
    } else if (strcmp(cmd, "status") == 0) {
        rc = cli_status(&cfg, nrest, rest);
    } else {
        rc = cli_dead(&cfg, nrest, rest);
    }
    cfg_free(&cfg);
    free(rest);
    exit(rc);
}
