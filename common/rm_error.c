#include <string.h>

#include "rm_error.h"

const char *
rm_strerror(int err)
{
    switch (err) {
    case RM_OK:
        return "success";
    case RM_E_NOTFOUND:
        return "not found";
    case RM_E_EXISTS:
        return "already exists";
    case RM_E_INVAL:
        return "invalid argument";
    case RM_E_TOOBIG:
        return "limit exceeded";
    case RM_E_FULL:
        return "store full (disk or map size limit)";
    case RM_E_CORRUPT:
        return "stored record is corrupt";
    case RM_E_SCHEMA:
        return "unsupported store schema version";
    case RM_E_PROTO:
        return "protocol error";
    case RM_E_STORE:
        return "store error";
    case RM_E_CLOSED:
        return "closed";
    case RM_E_CONFIG:
        return "configuration error";
    case RM_E_AGAIN:
        return "temporary failure, try again";
    case RM_E_PERM:
        return "not permitted";
    default:
        break;
    }
    if (err < 0 && err > RM_E_BASE)
        return strerror(-err);
    return "unknown error";
}
