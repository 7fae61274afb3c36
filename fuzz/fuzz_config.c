/*
 * Fuzz the config loader: any text must load or fail with a message,
 * never crash, leak or leave state behind; a loaded config must answer
 * queries and dump.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include "node/node_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct node_config cfg;
    char err[512];
    char *text;

    if (size > 64 * 1024)
        return 0;
    if ((text = malloc(size + 1)) == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    if (node_config_load_string(&cfg, text, "fuzz.conf", err, sizeof(err)) ==
        0) {
        struct sockaddr_in6 s6;
        struct sockaddr_in s4;
        int fd;

        memset(&s4, 0, sizeof(s4));
        s4.sin_family = AF_INET;
        memcpy(&s4.sin_addr, data, size < 4 ? size : 4);
        (void)node_config_trusted(&cfg, (struct sockaddr *)&s4);
        memset(&s6, 0, sizeof(s6));
        s6.sin6_family = AF_INET6;
        memcpy(&s6.sin6_addr, data, size < 16 ? size : 16);
        (void)node_config_trusted(&cfg, (struct sockaddr *)&s6);
        (void)node_config_local_domain(&cfg, text, size < 64 ? size : 64);
        if ((fd = open("/dev/null", O_WRONLY | O_CLOEXEC)) >= 0) {
            node_config_dump(&cfg, fd);
            close(fd);
        }
        node_config_cleanup(&cfg);
    } else if (err[0] == '\0') {
        abort(); /* every failure explains itself */
    }
    free(text);
    return 0;
}
