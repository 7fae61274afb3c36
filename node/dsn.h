/*
 * dsn: delivery status notifications (RFC 3464) composed as whole
 * RFC 5322 messages, ready to be queued to the envelope sender.
 *
 * The message is multipart/report; report-type=delivery-status (RFC 6522)
 * with three parts:
 *   1. text/plain: what happened, for a person (which recipients, why,
 *      what the sender can do), in the style of Postfix's bounces;
 *   2. message/delivery-status: per-message fields (Reporting-MTA,
 *      Original-Envelope-Id, Arrival-Date) and one block per recipient
 *      (Original-Recipient, Final-Recipient, Action, Status, Remote-MTA,
 *      Diagnostic-Code, Last-Attempt-Date, Will-Retry-Until);
 *   3. the original: text/rfc822-headers (default, RET=HDRS) or the whole
 *      message/rfc822 (RET=FULL). For a message that needed SMTPUTF8 the
 *      types are message/global-delivery-status, message/global-headers and
 *      message/global (RFC 6533).
 *
 * Pure: no I/O, no loop; the caller supplies the time.
 */
#ifndef RM_NODE_DSN_H
#define RM_NODE_DSN_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

enum dsn_action {
    DSN_FAILED = 0,
    DSN_DELAYED = 1,
    DSN_DELIVERED = 2,
    DSN_RELAYED = 3 /* to a server without DSN, NOTIFY=SUCCESS asked */
};

struct dsn_rcpt {
    const char *addr;   /* final recipient, without <> */
    const char *orcpt;  /* DSN ORCPT as received ("rfc822;a@b", xtext
                           encoded) or NULL */
    enum dsn_action action;
    const char *status;     /* "5.1.1" */
    const char *remote_mta; /* host name, or NULL */
    const char *diagnostic; /* the remote reply "550 5.1.1 no such user",
                               written as "smtp; ..."; or NULL */
    int64_t last_attempt;   /* unix seconds; 0 = omit */
};

struct dsn_report {
    const char *reporting_mta; /* our hostname */
    const char *from;          /* From: address of the report
                                  ("MAILER-DAEMON@host") */
    const char *to;            /* the envelope sender it goes to */
    const char *envid;         /* ENVID or NULL */
    int64_t arrival;           /* when the original arrived */
    int64_t now;               /* Date: of the report */
    int64_t retry_until;       /* DSN_DELAYED: Will-Retry-Until; 0 omit */
    int ret_full;              /* include the whole original */
    int smtputf8;              /* the original needed SMTPUTF8 */
    const char *orig;          /* the original message (CRLF) */
    size_t orig_len;
    const struct dsn_rcpt *rcpts;
    size_t nrcpts; /* >= 1; all share one action in practice, mixed
                      actions are allowed */
    const char *msgid_domain;  /* for the report's Message-ID */
};

/*
 * Append the report (headers, CRLF line ends, no dot-stuffing) to out.
 * Header lines of the original are kept verbatim (its header ends at the
 * first empty line; a message without one is all header). Every line the
 * report writes itself is under 998 bytes. 0, RM_E_INVAL (no
 * recipients, NULL fields that are required), RM_E_TOOBIG / -ENOMEM from
 * the buffer.
 */
int dsn_compose(const struct dsn_report *r, struct buf *out);

#endif
