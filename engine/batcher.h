/* batcher.h: how texts become forward batches. Texts are sorted by token count inside the
 * look-ahead window and cut so that each batch's padded size (longest text * count) fits the
 * token budget and the text cap: short texts are never padded to long ones. Pure logic: no
 * I/O, no allocation. */
#ifndef WEAVER_BATCHER_H
#define WEAVER_BATCHER_H

/* Fills order[0, n) with text indices sorted by tokens (stable for equal counts) and writes the
 * end offsets (into order) of each batch to ends; returns the number of batches. A single text
 * over the budget still gets a batch of its own. ends must hold n entries. */
int batch_plan(const int *tokens, int n, int token_budget, int max_texts, int *order, int *ends);

#endif
