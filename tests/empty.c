/* empty.c: keeps a runtime library non-empty before its sources exist. */
typedef int weaver_empty_translation_unit;
