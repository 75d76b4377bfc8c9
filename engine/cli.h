/* cli.h: the sub-commands behind engine/main.c. Each returns a process exit code and never
 * exits itself. */
#ifndef WEAVER_CLI_H
#define WEAVER_CLI_H

#include "config/config.h"

#define CLI_EX_USAGE 64       /* EX_USAGE */
#define CLI_EX_UNAVAILABLE 69 /* EX_UNAVAILABLE: Redis unreachable */
#define CLI_EX_TEMPFAIL 75    /* EX_TEMPFAIL: --wait timed out */

/* argv[0] is the sub-command name; options already consumed by main are not included. */
int cli_enqueue(const Config *cfg, int argc, char **argv);
int cli_status(const Config *cfg, int argc, char **argv);
int cli_dead(const Config *cfg, int argc, char **argv);

/* Provided by the runtimes (engine/embed, engine/decode). */
int cli_embed_main(int argc, char **argv);
int cli_tokenize_main(int argc, char **argv);
/* `tokenize --model FILE.gguf`: a GGUF vocabulary's tokenizer (engine/decode/cli_tokenize.c). */
int cli_tokenize_gguf_main(int argc, char **argv);
int cli_generate_main(int argc, char **argv);

/* `weaver-engine pin show|verify|reset [--cohort NAME] [--yes]` (engine/cli_pin.c). Exit codes:
 * 0 ok, 1 no pin for the cohort, 64 usage (also reset without --yes), 65 verify mismatch
 * (PIN_EXIT_MISMATCH), 66 embedder failed (verify), 69 Redis unreachable. */
int cli_pin(const Config *cfg, int argc, char **argv);

#endif
