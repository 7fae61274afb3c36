/*
 * Fuzz a whole inbound SMTP session: the input is the byte stream a
 * client sends, fed through a socketpair to a real session with a real
 * store in a temp dir. Whatever the bytes, the node must not crash, leak
 * or stall, and must stay consistent.
 */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz/harness_session.h"

#define FUZZ_INPUT_MAX (16 * 1024)

static struct harness fuzz_h;
static int fuzz_ready;

static void
fuzz_cleanup(void)
{
    if (fuzz_ready)
        harness_cleanup(&fuzz_h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fuzz_ready) {
        if (harness_init(&fuzz_h, 1) != 0)
            abort();
        fuzz_ready = 1;
        atexit(fuzz_cleanup);
    }
    if (size > FUZZ_INPUT_MAX)
        size = FUZZ_INPUT_MAX;
    /* The first byte chooses trusted or not, so both policies run. */
    harness_converse(&fuzz_h, (const char *)data, size,
                     size > 0 && (data[0] & 1), NULL);
    return 0;
}
