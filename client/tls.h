/* tls.h — OpenSSL for the transport: the client context (CA, client certificate and key,
 * TLS 1.2+, ALPN "h2") and non-blocking handshakes whose failures become messages that say
 * why (verification, wrong port, rejected client certificate). Used only by rpc.c. */
#ifndef ETCDFS_TLS_H
#define ETCDFS_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>

#include "etcd.h"

/* Loads the CA (or the system default paths), the client certificate and key. Errors name the
 * file. Returns 0 or -ETCD_E_*. */
int tls_ctx_new(const char *cacert, const char *cert, const char *key, bool insecure_skip_verify,
                SSL_CTX **out, etcd_error *err);
/* A client SSL on fd verifying host (DNS name or IP literal) unless the context is insecure. */
int tls_conn_new(SSL_CTX *ctx, int fd, const char *host, SSL **out, etcd_error *err);
/* One handshake step: 1 when done with h2 negotiated, 0 when it waits for I/O (*want_write
 * says which direction), or -ETCD_E_* with the reason in err. */
int tls_handshake(SSL *ssl, const char *host, bool *want_write, etcd_error *err);
/* Describes a failed SSL_read/SSL_write whose SSL_get_error() was ssl_err; returns -code. */
int tls_io_error(SSL *ssl, int ssl_err, etcd_error *err);

#endif
