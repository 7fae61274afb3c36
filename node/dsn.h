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
    const char *addr;  /* final recipient, without <> */
    const char *orcpt; /* DSN ORCPT as received ("rfc822;a@b", xtext
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
    size_t nrcpts;            /* >= 1; all share one action in practice, mixed
                                 actions are allowed */
    const char *msgid_domain; /* for the report's Message-ID */
};

/*
 * Append the report (headers, CRLF line ends, no dot-stuffing) to out.
 * Header lines of the original are kept verbatim (its header ends at the
 * first empty line; a message without one is all header). Every line the
 * report writes itself is under 998 bytes. 0, RM_E_INVAL (no
 * recipients, NULL fields that are required), RM_E_TOOBIG / -ENOMEM from
 * the buffer.
 *
 * Details of the contract above:
 * - Required: reporting_mta, from, to (never the null sender, RFC 5321
 *   §4.5.5), msgid_domain, now > 0, rcpts with nrcpts >= 1, and orig
 *   unless orig_len is 0. arrival 0 omits Arrival-Date. envid, orcpt and
 *   remote_mta may also be "" for absent.
 * - Fields copied verbatim (addresses, host names, envid, orcpt) must have
 *   no control characters and be at most 500 octets (host names 253);
 *   SP only in addresses; 8-bit only as UTF-8 and only with smtputf8;
 *   orcpt must be addr-type ";" value. Otherwise RM_E_INVAL.
 * - status is an RFC 3463 code whose class fits the action: failed 5 or 4
 *   (a temporary failure given up on), delayed 4, delivered/relayed 2.
 * - diagnostic is never refused: CR, LF and other control characters
 *   become spaces, 8-bit octets that are not allowed become '?', and long
 *   text is folded (lines of 78, a word without spaces cut past 900).
 * - Message-ID and the MIME boundary are random (libsodium); the boundary
 *   does not occur in the part of the original that is included.
 * - On any error out is left as it was (len restored).
 */
int dsn_compose(const struct dsn_report *r, struct buf *out);

/* The report's Subject: by its gravest action (failed, then delayed, then
   delivered/relayed). */
const char *dsn_subject(const struct dsn_report *r);

/*
 * The enhanced status code (RFC 3463) to report for an SMTP reply: enh
 * when it is a valid code of the same class as the reply code (it may be
 * NULL, or point into the reply text: it ends at NUL or SP), else "2.0.0",
 * "4.0.0" or "5.0.0" by the class of code (anything not 2yz or 4yz is
 * 5). Writes NUL-terminated text to out and returns out.
 */
const char *dsn_status_from_reply(int code, const char *enh, char out[16]);

#endif
