/* tls.c — the OpenSSL side of the transport: builds the client SSL_CTX from the PEM files,
 * creates per-connection SSL objects with host/IP verification, runs non-blocking handshakes
 * and turns OpenSSL's error queue into messages a user can act on. */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *last_ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    if (!e)
        return "unknown error";
    const char *r = ERR_reason_error_string(e);
    if (r)
        return r;
    ERR_error_string_n(e, buf, len);
    return buf;
}

static int load_error(etcd_error *err, const char *what, const char *file)
{
    char tmp[256];
    if (access(file, R_OK) != 0)
        return etcd_error_set(err, ETCD_E_TLS, -1, "cannot read %s %s: %s", what, file,
                              strerror(errno));
    return etcd_error_set(err, ETCD_E_TLS, -1, "cannot load %s %s: %s", what, file,
                          last_ssl_reason(tmp, sizeof tmp));
}

/* A private key others can read is as good as theirs: say so (etcdctl does not; ssh does).
 * Only a warning: kubeadm's keys are 0600 root, and refusing would break odd but deliberate
 * setups (a group-readable key for a monitoring group). */
static void warn_key_mode(const char *key)
{
    struct stat st;
    if (stat(key, &st) != 0 || !S_ISREG(st.st_mode))
        return;
    if (st.st_mode & (S_IRWXG | S_IRWXO))
        fprintf(stderr, "warning: client key %s is accessible by group or others (mode %04o): "
                "chmod 600 %s\n", key, (unsigned)(st.st_mode & 07777), key);
}

int tls_ctx_new(const char *cacert, const char *cert, const char *key, bool insecure_skip_verify,
                SSL_CTX **out, etcd_error *err)
{
    static const unsigned char alpn[] = {2, 'h', '2'};
    *out = NULL;
    if ((cert && *cert) != (key && *key))
        return etcd_error_set(err, ETCD_E_INVALID_ARG, -1,
                              "a client certificate needs both --cert and --key");
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return etcd_error_set(err, ETCD_E_NOMEM, -1, "SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn) != 0) {
        SSL_CTX_free(ctx);
        return etcd_error_set(err, ETCD_E_TLS, -1, "cannot set ALPN");
    }
    int rc = 0;
    if (cacert && *cacert) {
        if (SSL_CTX_load_verify_locations(ctx, cacert, NULL) != 1)
            rc = load_error(err, "CA file", cacert);
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        rc = etcd_error_set(err, ETCD_E_TLS, -1, "cannot load the system CA certificates");
    }
    if (rc == 0 && cert && *cert) {
        if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
            rc = load_error(err, "client certificate", cert);
        else if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 &&
                 ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH)
            rc = load_error(err, "client key", key);
        else if (SSL_CTX_check_private_key(ctx) != 1)
            rc = etcd_error_set(err, ETCD_E_TLS, -1, "client key %s does not match certificate %s",
                                key, cert);
    }
    if (rc < 0) {
        SSL_CTX_free(ctx);
        return rc;
    }
    if (cert && *cert)
        warn_key_mode(key);
    if (insecure_skip_verify)
        fprintf(stderr, "warning: --insecure-skip-tls-verify: the server certificate is not "
                "verified; anyone on the network path can pose as etcd and read or change "
                "every key\n");
    SSL_CTX_set_verify(ctx, insecure_skip_verify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    *out = ctx;
    return 0;
}

static bool is_ip_literal(const char *host)
{
    unsigned char tmp[16];
    return inet_pton(AF_INET, host, tmp) == 1 || inet_pton(AF_INET6, host, tmp) == 1;
}

int tls_conn_new(SSL_CTX *ctx, int fd, const char *host, SSL **out, etcd_error *err)
{
    ERR_clear_error();
    SSL *ssl = SSL_new(ctx);
    if (!ssl || SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return etcd_error_set(err, ETCD_E_NOMEM, -1, "SSL_new failed");
    }
    SSL_set_connect_state(ssl);
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    int ok;
    if (is_ip_literal(host)) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(param, host);
    } else {
        /* SNI only for names: RFC 6066 forbids IP literals there. */
        SSL_set_tlsext_host_name(ssl, host);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = X509_VERIFY_PARAM_set1_host(param, host, 0);
    }
    if (ok != 1) {
        SSL_free(ssl);
        return etcd_error_set(err, ETCD_E_TLS, -1, "cannot set TLS verification host %s", host);
    }
    *out = ssl;
    return 0;
}

/* Why the peer or the record layer stopped us, with a hint for the usual causes. */
static int describe_ssl_failure(SSL *ssl, int ssl_err, bool in_handshake, const char *host,
                                etcd_error *err)
{
    char tmp[256];
    long vr = SSL_get_verify_result(ssl);
    if (in_handshake && vr != X509_V_OK) {
        if (vr == X509_V_ERR_HOSTNAME_MISMATCH || vr == X509_V_ERR_IP_ADDRESS_MISMATCH)
            return etcd_error_set(err, ETCD_E_TLS, -1,
                                  "TLS: certificate verify failed: %s (the server certificate is "
                                  "not valid for %s)", X509_verify_cert_error_string(vr),
                                  host ? host : "this host");
        return etcd_error_set(err, ETCD_E_TLS, -1,
                              "TLS: certificate verify failed: %s (wrong --cacert?)",
                              X509_verify_cert_error_string(vr));
    }
    if (ssl_err == SSL_ERROR_SYSCALL || (ssl_err == SSL_ERROR_SSL && !ERR_peek_last_error())) {
        int e = errno;
        if ((e == 0 || e == EAGAIN) && in_handshake &&
            BIO_number_read(SSL_get_rbio(ssl)) == 0)
            return etcd_error_set(err, ETCD_E_TLS, -1,
                                  "TLS: the server closed the connection without answering the "
                                  "handshake (endpoint speaks plain HTTP/2, not TLS? use http://)");
        if (e == 0 || e == EAGAIN)
            return etcd_error_set(err, ETCD_E_UNAVAILABLE, -1, "connection closed by the server%s",
                                  in_handshake ? " during the TLS handshake" : "");
        return etcd_error_set(err, ETCD_E_UNAVAILABLE, -1, "TLS: %s", strerror(e));
    }
    if (ssl_err == SSL_ERROR_ZERO_RETURN)
        return etcd_error_set(err, ETCD_E_UNAVAILABLE, -1, "TLS connection closed by the server");
    int reason = ERR_GET_REASON(ERR_peek_last_error());
    const char *why = last_ssl_reason(tmp, sizeof tmp);
    switch (reason) {
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
        return etcd_error_set(err, ETCD_E_TLS, -1,
                              "TLS handshake failed: %s (endpoint speaks plain HTTP, not TLS? "
                              "use http://)", why);
    case SSL_R_UNEXPECTED_EOF_WHILE_READING:
        if (in_handshake && BIO_number_read(SSL_get_rbio(ssl)) == 0)
            return etcd_error_set(err, ETCD_E_TLS, -1,
                                  "TLS: the server closed the connection without answering the "
                                  "handshake (endpoint speaks plain HTTP/2, not TLS? use http://)");
        return etcd_error_set(err, ETCD_E_TLS, -1,
                              "TLS: connection closed by the server%s (endpoint does not speak "
                              "TLS, or it rejected us)", in_handshake ? " during the handshake" : "");
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
        return etcd_error_set(err, ETCD_E_TLS, -1,
                              "TLS: the server rejected the connection: %s (client certificate "
                              "missing or not trusted? check --cert/--key)", why);
    default:
        return etcd_error_set(err, ETCD_E_TLS, -1, "TLS%s: %s",
                              in_handshake ? " handshake failed" : "", why);
    }
}

int tls_handshake(SSL *ssl, const char *host, bool *want_write, etcd_error *err)
{
    ERR_clear_error();
    errno = 0;
    int rc = SSL_connect(ssl);
    if (rc == 1) {
        const unsigned char *p = NULL;
        unsigned int n = 0;
        SSL_get0_alpn_selected(ssl, &p, &n);
        if (n != 2 || memcmp(p, "h2", 2) != 0)
            return etcd_error_set(err, ETCD_E_PROTOCOL, -1,
                                  "server did not negotiate h2 via ALPN (not a gRPC endpoint, or a "
                                  "plain HTTPS port?)");
        return 1;
    }
    int e = SSL_get_error(ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        *want_write = e == SSL_ERROR_WANT_WRITE;
        return 0;
    }
    return describe_ssl_failure(ssl, e, true, host, err);
}

int tls_io_error(SSL *ssl, int ssl_err, etcd_error *err)
{
    return describe_ssl_failure(ssl, ssl_err, false, NULL, err);
}
