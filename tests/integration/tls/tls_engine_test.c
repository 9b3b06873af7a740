/* tls_engine_test.c - one tls_conn paired in-process with an OpenSSL client
 * SSL over memory buffers (no sockets): byte-at-a-time delivery, large writes
 * against the fixed buffers, close_notify both ways, key updates, the misuse
 * answers the contract promises, and tls_ctx_new's error codes. The client is
 * OpenSSL's own, configured independently (verifies against the test CA).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tls.h"
#include "tls_helpers.h"

static char cert[512], key[512], ca[512];
static struct tls_ctx *ctx;
static struct tls_conn *srv;

/* The client: an SSL on a BIO pair whose far end (net) the test shuttles. */
static SSL_CTX *cctx;
static SSL *cli;
static BIO *cnet;

static void make_client(int max_version, const unsigned char *alpn, unsigned alpn_len)
{
	BIO *inner;

	cctx = SSL_CTX_new(TLS_client_method());
	cr_assert_not_null(cctx);
	cr_assert_eq(SSL_CTX_load_verify_locations(cctx, ca, NULL), 1);
	SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);
	if (max_version)
		SSL_CTX_set_max_proto_version(cctx, max_version);
	if (alpn)
		cr_assert_eq(SSL_CTX_set_alpn_protos(cctx, alpn, alpn_len), 0);
	cli = SSL_new(cctx);
	cr_assert_not_null(cli);
	SSL_set_tlsext_host_name(cli, "localhost");
	cr_assert_eq(SSL_set1_host(cli, "localhost"), 1);
	cr_assert_eq(BIO_new_bio_pair(&inner, 1 << 20, &cnet, 1 << 20), 1);
	SSL_set_bio(cli, inner, inner);
	SSL_set_connect_state(cli);
}

static void setup(void)
{
	const char *dir = helpers_certs();
	struct tls_config cfg = { .cert_file = cert, .key_file = key };

	snprintf(cert, sizeof(cert), "%s/server.pem", dir);
	snprintf(key, sizeof(key), "%s/server.key", dir);
	snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
	cr_assert_eq(tls_ctx_new(&cfg, &ctx), 0);
	cr_assert_eq(tls_conn_new(ctx, -1, &srv), 0);
}

static void teardown(void)
{
	tls_conn_free(srv);
	tls_ctx_free(ctx);
	SSL_free(cli);
	BIO_free(cnet);
	SSL_CTX_free(cctx);
	helpers_cleanup();
}

/* Moves up to step bytes each way; returns the bytes moved. */
static size_t shuttle(size_t step)
{
	size_t moved = 0;
	const void *d;
	size_t len;
	char *p;
	int n;

	/* client -> server */
	n = BIO_nread0(cnet, &p);
	if (n > 0) {
		ssize_t k = tls_conn_feed(srv, p, (size_t)n < step ? (size_t)n : step);

		cr_assert_geq(k, 0);
		BIO_nread(cnet, &p, (int)k);
		moved += (size_t)k;
	}
	/* server -> client */
	len = tls_conn_pending(srv, &d);
	if (len > 0) {
		int w = BIO_write(cnet, d, (int)(len < step ? len : step));

		cr_assert_gt(w, 0);
		tls_conn_consume(srv, (size_t)w);
		moved += (size_t)w;
	}
	return moved;
}

/* Runs both handshakes to completion, moving step bytes at a time. */
static void handshake(size_t step)
{
	int srv_r = -EAGAIN, cli_r = 0;

	for (int i = 0; i < 200000; i++) {
		if (cli_r != 1) {
			cli_r = SSL_do_handshake(cli);
			if (cli_r != 1)
				cr_assert_eq(SSL_get_error(cli, cli_r), SSL_ERROR_WANT_READ,
					     "client handshake: %s",
					     ERR_reason_error_string(ERR_get_error()));
		}
		if (srv_r != 0) {
			srv_r = tls_conn_handshake(srv);
			cr_assert(srv_r == 0 || srv_r == -EAGAIN, "server handshake %d: %s", srv_r,
				  tls_conn_error(srv));
		}
		if (shuttle(step) == 0 && cli_r == 1 && srv_r == 0)
			return;
	}
	cr_assert_fail("handshake did not finish");
}

/* Reads exactly len bytes on the server side, shuttling step at a time. */
static void server_read_all(char *buf, size_t len, size_t step)
{
	size_t got = 0;

	for (int i = 0; got < len && i < 10000000; i++) {
		ssize_t m = tls_conn_read(srv, buf + got, len - got);

		if (m > 0) {
			got += (size_t)m;
			continue;
		}
		cr_assert_eq(m, -EAGAIN, "server read %zd: %s", m, tls_conn_error(srv));
		cr_assert_gt(shuttle(step), 0, "stalled at %zu of %zu", got, len);
	}
	cr_assert_eq(got, len);
}

static void client_write_all(const char *buf, size_t len)
{
	cr_assert_eq(SSL_write(cli, buf, (int)len), (int)len);
}

/* Reads what the client can decrypt from what reached it into
 * dst[got..total), until it would need more bytes; returns the new got. */
static size_t client_read_available(char *dst, size_t got, size_t total)
{
	for (;;) {
		int n = SSL_read(cli, dst + got, (int)(total - got > 65536 ? 65536 : total - got));

		if (n <= 0) {
			cr_assert_eq(SSL_get_error(cli, n), SSL_ERROR_WANT_READ);
			return got;
		}
		got += (size_t)n;
	}
}

TestSuite(tls_engine, .init = setup, .fini = teardown, .timeout = 60);

Test(tls_engine, handshake_and_data_survive_byte_at_a_time_delivery)
{
	static const char msg[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
	char buf[sizeof(msg)];
	int n;

	make_client(0, NULL, 0);
	handshake(1);
	cr_assert_str_eq(tls_conn_version(srv), "TLSv1.3");
	cr_assert_eq(SSL_get_verify_result(cli), X509_V_OK);

	client_write_all(msg, sizeof(msg) - 1);
	server_read_all(buf, sizeof(msg) - 1, 1);
	cr_assert_eq(memcmp(buf, msg, sizeof(msg) - 1), 0);

	cr_assert_eq(tls_conn_write(srv, "pong", 4), 4);
	while (shuttle(1) > 0)
		;
	n = SSL_read(cli, buf, sizeof(buf));
	cr_assert_eq(n, 4);
	cr_assert_eq(memcmp(buf, "pong", 4), 0);

	struct tls_stats st;

	tls_ctx_stats(ctx, &st);
	cr_assert_eq(st.handshakes, 1);
	cr_assert_eq(st.path[TLS_PATH_USERSPACE], 1);
	cr_assert_eq(tls_conn_path(srv), TLS_PATH_USERSPACE);
}

Test(tls_engine, tls12_client_negotiates_tls12)
{
	make_client(TLS1_2_VERSION, NULL, 0);
	handshake(4096);
	cr_assert_str_eq(tls_conn_version(srv), "TLSv1.2");
	cr_assert_not_null(strstr(SSL_get_cipher_name(cli), "GCM"));
}

Test(tls_engine, alpn_picks_http11_from_the_clients_list)
{
	static const unsigned char offer[] = "\x02h2\x08http/1.1";
	const unsigned char *sel = NULL;
	unsigned sel_len = 0;

	make_client(0, offer, sizeof(offer) - 1);
	handshake(4096);
	SSL_get0_alpn_selected(cli, &sel, &sel_len);
	cr_assert_eq(sel_len, 8);
	cr_assert_eq(memcmp(sel, "http/1.1", 8), 0);
}

Test(tls_engine, alpn_h2_only_gets_no_protocol_but_a_handshake)
{
	static const unsigned char offer[] = "\x02h2";
	const unsigned char *sel = NULL;
	unsigned sel_len = 0;

	make_client(0, offer, sizeof(offer) - 1);
	handshake(4096);
	SSL_get0_alpn_selected(cli, &sel, &sel_len);
	cr_assert_eq(sel_len, 0);
}

static char pattern_at(size_t i)
{
	return (char)(i * 131 + (i >> 11));
}

Test(tls_engine, large_server_write_is_taken_in_pieces_and_arrives_intact)
{
	const size_t total = (4u << 20) + 7;
	char *src = malloc(total), *dst = malloc(total);
	size_t sent = 0, got = 0;
	bool saw_eagain = false, saw_partial = false;

	cr_assert(src && dst);
	for (size_t i = 0; i < total; i++)
		src[i] = pattern_at(i);
	make_client(0, NULL, 0);
	handshake(4096);
	while (got < total) {
		if (sent < total) {
			ssize_t k = tls_conn_write(srv, src + sent, total - sent);

			if (k == -EAGAIN) {
				saw_eagain = true;
			} else {
				cr_assert_gt(k, 0);
				if ((size_t)k < total - sent)
					saw_partial = true;
				sent += (size_t)k;
			}
		}
		/* Deliver in odd-sized pieces, then let the client read. */
		while (shuttle(7919) > 0)
			;
		got = client_read_available(dst, got, total);
	}
	cr_assert_eq(memcmp(src, dst, total), 0);
	cr_assert(saw_partial, "a 4 MiB write should not fit the ring at once");
	cr_assert(saw_eagain || saw_partial);
	free(src);
	free(dst);
}

Test(tls_engine, large_client_write_is_read_through_the_input_ring)
{
	const size_t total = 3u << 20;
	char *src = malloc(total), *dst = malloc(total);
	size_t off = 0;

	cr_assert(src && dst);
	for (size_t i = 0; i < total; i++)
		src[i] = pattern_at(i + 5);
	make_client(0, NULL, 0);
	handshake(65536);
	/* The client buffers all of it (1 MiB pair ring: write in slices). */
	for (size_t done = 0, got = 0; done < total || got < total;) {
		if (done < total) {
			size_t n = total - done > 262144 ? 262144 : total - done;
			int w = SSL_write(cli, src + done, (int)n);

			if (w > 0)
				done += (size_t)w;
		}
		/* The input ring is smaller than what waits: feed takes less. */
		while (got < total) {
			ssize_t m = tls_conn_read(srv, dst + got, total - got);

			if (m > 0) {
				got += (size_t)m;
				continue;
			}
			cr_assert_eq(m, -EAGAIN);
			if (shuttle(1 << 20) == 0)
				break;
		}
		off = got;
	}
	cr_assert_eq(off, total);
	cr_assert_eq(memcmp(src, dst, total), 0);
	free(src);
	free(dst);
}

Test(tls_engine, feed_takes_at_most_the_input_ring)
{
	static char junk[100000];
	ssize_t k;

	memset(junk, 0x16, sizeof(junk));
	k = tls_conn_feed(srv, junk, sizeof(junk));
	cr_assert_gt(k, 0);
	cr_assert_lt(k, (ssize_t)sizeof(junk));
	cr_assert_eq(tls_conn_feed(srv, junk, sizeof(junk)), 0, "full ring takes nothing");
}

Test(tls_engine, pending_chunk_does_not_move_when_more_is_written)
{
	const void *d1, *d2;
	size_t l1, l2;
	char copy[256];

	make_client(0, NULL, 0);
	handshake(4096);
	cr_assert_eq(tls_conn_write(srv, "first", 5), 5);
	l1 = tls_conn_pending(srv, &d1);
	cr_assert_gt(l1, 0);
	cr_assert_leq(l1, sizeof(copy));
	memcpy(copy, d1, l1);
	cr_assert_eq(tls_conn_write(srv, "second", 6), 6);
	l2 = tls_conn_pending(srv, &d2);
	cr_assert_eq(d1, d2);
	cr_assert_gt(l2, l1);
	cr_assert_eq(memcmp(d2, copy, l1), 0);
}

/* The worker sends [pending) from io_uring while it keeps encrypting more:
 * the bytes of a send in flight must not move or change, a response larger
 * than the output buffer waits (-EAGAIN) until everything earlier was
 * consumed, and the client still receives every byte in order. */
Test(tls_engine, output_in_flight_never_moves_and_a_large_response_waits_for_consume)
{
	const size_t total = (256u << 10) + 3;
	char *src = malloc(total), *dst = malloc(total), *shadow = malloc(1 << 17);
	size_t sent = 0, got = 0;
	unsigned eagain_while_in_flight = 0;

	cr_assert(src && dst && shadow);
	for (size_t i = 0; i < total; i++)
		src[i] = pattern_at(i + 11);
	make_client(0, NULL, 0);
	handshake(4096);
	while (got < total) {
		const void *fly, *d;
		size_t fly_len, len, half;
		ssize_t k;

		/* Encrypt until nothing fits, then start a "send" of it all. */
		while (sent < total && (k = tls_conn_write(srv, src + sent, total - sent)) > 0)
			sent += (size_t)k;
		fly_len = tls_conn_pending(srv, &fly);
		cr_assert_gt(fly_len, 0);
		cr_assert_leq(fly_len, (size_t)1 << 17);
		memcpy(shadow, fly, fly_len);
		/* While it is in flight the caller keeps writing: nothing fits
		 * any more (or the little that does is appended behind). */
		if (sent < total) {
			k = tls_conn_write(srv, src + sent, total - sent);
			if (k == -EAGAIN)
				eagain_while_in_flight++;
			else
				cr_assert_gt(k, 0);
			if (k > 0)
				sent += (size_t)k;
		}
		/* The send completes in two parts; the second half is still the
		 * same memory with the same bytes after the first was consumed. */
		half = fly_len / 2;
		cr_assert_eq(BIO_write(cnet, fly, (int)half), (int)half);
		tls_conn_consume(srv, half);
		len = tls_conn_pending(srv, &d);
		cr_assert_eq(d, (const char *)fly + half, "unconsumed output moved");
		cr_assert_geq(len, fly_len - half);
		if (sent < total && tls_conn_write(srv, src + sent, total - sent) == -EAGAIN)
			eagain_while_in_flight++;
		cr_assert_eq(memcmp(shadow, fly, fly_len), 0, "in-flight bytes changed");
		cr_assert_eq(BIO_write(cnet, (const char *)fly + half, (int)(fly_len - half)),
			     (int)(fly_len - half));
		tls_conn_consume(srv, fly_len - half);
		/* Whatever was appended behind the flight goes out next time. */
		got = client_read_available(dst, got, total);
		if (sent == total && tls_conn_pending(srv, &d) == 0)
			cr_assert_eq(got, total, "all ciphertext out, plaintext missing");
	}
	cr_assert_eq(memcmp(src, dst, total), 0);
	cr_assert_gt(eagain_while_in_flight, 0, "the output buffer never filled up");
	free(src);
	free(dst);
	free(shadow);
}

/* Records arrive across feeds: the input buffer fills with three whole
 * records and the head of a fourth; after three reads only that partial
 * record is left at the buffer's end, and the next feed must still take the
 * rest of it (by moving the partial record to the front). */
Test(tls_engine, input_buffer_makes_room_behind_a_partial_record)
{
	enum { REC = 10000, NREC = 4 };
	char *src = malloc(REC * NREC), *dst = malloc(REC * NREC);
	const void *d;
	size_t total, rec, fed = 0;
	char *p;
	int n;

	cr_assert(src && dst);
	for (size_t i = 0; i < REC * NREC; i++)
		src[i] = pattern_at(i + 3);
	make_client(0, NULL, 0);
	handshake(4096);
	cr_assert_eq(tls_conn_pending(srv, &d), 0);
	for (int i = 0; i < NREC; i++)
		client_write_all(src + i * REC, REC);
	total = (size_t)BIO_ctrl_pending(cnet);
	rec = total / NREC;
	cr_assert_eq(rec * NREC, total, "records of equal size expected");
	/* The layout this test is about (32 KiB input buffer). */
	cr_assert(3 * rec < 32768 && 32768 < 4 * rec, "record size %zu", rec);

	/* One big feed: it stops at the buffer's end, inside record four. */
	n = BIO_nread0(cnet, &p);
	cr_assert_eq((size_t)n, total);
	fed = (size_t)tls_conn_feed(srv, p, total);
	cr_assert_gt(fed, 3 * rec);
	cr_assert_lt(fed, total);
	BIO_nread(cnet, &p, (int)fed);
	cr_assert_eq(tls_conn_feed(srv, "x", 1), 0, "buffer is full");

	/* Read exactly the three whole records, one at a time. */
	for (int i = 0; i < 3; i++)
		cr_assert_eq(tls_conn_read(srv, dst + i * REC, REC), REC);

	/* Only the partial fourth record is left; the rest must fit now. */
	n = BIO_nread0(cnet, &p);
	cr_assert_eq((size_t)n, total - fed);
	cr_assert_eq(tls_conn_feed(srv, p, (size_t)n), n);
	BIO_nread(cnet, &p, n);
	cr_assert_eq(tls_conn_read(srv, dst + 3 * REC, REC), REC);
	cr_assert_eq(tls_conn_read(srv, dst, REC), -EAGAIN);
	cr_assert_eq(memcmp(src, dst, REC * NREC), 0);
	free(src);
	free(dst);
}

/* Ciphertext fed one byte per call, and read after every byte: the record
 * is assembled across many empty reads and arrives intact. */
Test(tls_engine, data_fed_one_byte_per_call_with_a_read_after_each)
{
	char msg[3000], buf[sizeof(msg)];
	size_t got = 0, calls = 0;
	char *p;
	int n;

	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = pattern_at(i + 7);
	make_client(0, NULL, 0);
	handshake(4096);
	client_write_all(msg, sizeof(msg));
	while ((n = BIO_nread0(cnet, &p)) > 0) {
		ssize_t m;

		cr_assert_eq(tls_conn_feed(srv, p, 1), 1);
		BIO_nread(cnet, &p, 1);
		calls++;
		m = tls_conn_read(srv, buf + got, sizeof(buf) - got);
		if (m > 0)
			got += (size_t)m;
		else
			cr_assert_eq(m, -EAGAIN);
	}
	cr_assert_gt(calls, sizeof(msg));
	cr_assert_eq(got, sizeof(msg));
	cr_assert_eq(memcmp(buf, msg, sizeof(msg)), 0);
}

/* Several records in one feed (pipelined requests, each its own record):
 * OpenSSL reads them all ahead into its own buffer at the first read, so
 * the input buffer is empty while records are still undecrypted. Every
 * record must come out before the first -EAGAIN, without another feed. */
Test(tls_engine, records_read_ahead_in_one_feed_all_come_out)
{
	static const char *const rec[] = { "first request", "second, longer request",
					   "third" };
	char want[128] = "", buf[128];
	size_t got = 0, fed = 0;
	ssize_t m;
	char *p;
	int n;

	make_client(0, NULL, 0);
	handshake(4096);
	/* application data has flowed once: tls_conn_read's shortcut is on */
	client_write_all("x", 1);
	server_read_all(buf, 1, 4096);
	for (size_t i = 0; i < sizeof(rec) / sizeof(rec[0]); i++) {
		client_write_all(rec[i], strlen(rec[i]));
		strcat(want, rec[i]);
	}
	while ((n = BIO_nread0(cnet, &p)) > 0) {
		ssize_t k = tls_conn_feed(srv, p, (size_t)n);

		cr_assert_gt(k, 0);
		BIO_nread(cnet, &p, (int)k);
		fed += (size_t)k;
	}
	cr_assert_gt(fed, strlen(want));
	while ((m = tls_conn_read(srv, buf + got, sizeof(buf) - got)) > 0)
		got += (size_t)m;
	cr_assert_eq(m, -EAGAIN, "read %zd: %s", m, tls_conn_error(srv));
	cr_assert_eq(got, strlen(want), "got %zu of %zu bytes", got, strlen(want));
	cr_assert_eq(memcmp(buf, want, got), 0);
}

Test(tls_engine, read_and_write_before_handshake_say_not_connected)
{
	char buf[16];

	cr_assert_eq(tls_conn_read(srv, buf, sizeof(buf)), -ENOTCONN);
	cr_assert_eq(tls_conn_write(srv, "x", 1), -ENOTCONN);
	cr_assert_null(tls_conn_version(srv));
	cr_assert_eq(tls_conn_shutdown(srv), 0, "nothing to close yet");
	cr_assert_eq(tls_conn_handshake(srv), -EAGAIN, "no input yet");
	cr_assert_not(tls_conn_on_socket(srv));
}

Test(tls_engine, server_close_notify_reaches_client_and_stops_writes)
{
	char buf[16];
	int n;

	make_client(0, NULL, 0);
	handshake(4096);
	cr_assert_eq(tls_conn_write(srv, "bye", 3), 3);
	cr_assert_eq(tls_conn_shutdown(srv), 0);
	cr_assert_eq(tls_conn_write(srv, "more", 4), -EPIPE);
	while (shuttle(4096) > 0)
		;
	n = SSL_read(cli, buf, sizeof(buf));
	cr_assert_eq(n, 3);
	n = SSL_read(cli, buf, sizeof(buf));
	cr_assert_eq(n, 0);
	cr_assert_eq(SSL_get_error(cli, n), SSL_ERROR_ZERO_RETURN);
}

Test(tls_engine, client_close_notify_reads_as_zero)
{
	char buf[16];

	make_client(0, NULL, 0);
	handshake(4096);
	client_write_all("last", 4);
	SSL_shutdown(cli);
	while (shuttle(4096) > 0)
		;
	cr_assert_eq(tls_conn_read(srv, buf, sizeof(buf)), 4);
	cr_assert_eq(tls_conn_read(srv, buf, sizeof(buf)), 0);
	cr_assert_eq(tls_conn_read(srv, buf, sizeof(buf)), 0, "stays closed");
}

Test(tls_engine, client_key_update_is_followed_both_ways)
{
	char buf[64];
	int n;

	make_client(0, NULL, 0);
	handshake(4096);
	cr_assert_eq(SSL_key_update(cli, SSL_KEY_UPDATE_REQUESTED), 1);
	client_write_all("after update", 12);
	server_read_all(buf, 12, 4096);
	cr_assert_eq(memcmp(buf, "after update", 12), 0);
	/* The server answered with its own KeyUpdate; its data must still be
	 * readable under the new keys. */
	cr_assert_eq(tls_conn_write(srv, "server too", 10), 10);
	while (shuttle(4096) > 0)
		;
	n = SSL_read(cli, buf, sizeof(buf));
	cr_assert_eq(n, 10);
	cr_assert_eq(memcmp(buf, "server too", 10), 0);
}

Test(tls_engine, tampered_record_kills_the_connection)
{
	char buf[64];
	char *p;
	int n;

	make_client(0, NULL, 0);
	handshake(4096);
	client_write_all("secret", 6);
	n = BIO_nread0(cnet, &p);
	cr_assert_gt(n, 10);
	p[n - 1] ^= 0x01;  /* flip a tag bit */
	while (shuttle(4096) > 0)
		;
	cr_assert_eq(tls_conn_read(srv, buf, sizeof(buf)), -EPROTO);
	cr_assert_not_null(tls_conn_error(srv));
	cr_assert_eq(tls_conn_write(srv, "x", 1), -EPROTO);
}

Test(tls_engine, failed_handshake_is_counted_once)
{
	static const char junk[] = "\x16\x03\x01\x00\x05hello";
	struct tls_stats st;

	cr_assert_eq(tls_conn_feed(srv, junk, sizeof(junk) - 1), (ssize_t)sizeof(junk) - 1);
	cr_assert_eq(tls_conn_handshake(srv), -EPROTO);
	cr_assert_eq(tls_conn_handshake(srv), -EPROTO);
	cr_assert_not_null(tls_conn_error(srv));
	tls_ctx_stats(ctx, &st);
	cr_assert_eq(st.handshake_failures, 1);
	cr_assert_eq(st.handshakes, 0);
}

Test(tls_engine, connection_keeps_its_pair_across_reload_and_free_order)
{
	char buf[16];
	struct tls_conn *second = NULL;
	struct tls_config cfg = { .cert_file = cert, .key_file = key };

	make_client(0, NULL, 0);
	handshake(4096);
	cr_assert_eq(tls_ctx_reload(ctx, &cfg), 0);
	cr_assert_eq(tls_ctx_reload(ctx, &cfg), 0);
	cr_assert_eq(tls_conn_new(ctx, -1, &second), 0);
	client_write_all("still", 5);
	server_read_all(buf, 5, 4096);
	cr_assert_eq(memcmp(buf, "still", 5), 0);
	tls_conn_free(second);
	tls_conn_free(NULL);
}

/* ---- tls_ctx_new's errors (no connection needed) ---- */

Test(tls_ctx, new_rejects_missing_and_mismatched_files_without_writing_ret)
{
	const char *dir = helpers_certs();
	char c[512], k[512], other[512];
	struct tls_ctx *x = (struct tls_ctx *)0x1;

	snprintf(c, sizeof(c), "%s/server.pem", dir);
	snprintf(k, sizeof(k), "%s/server.key", dir);
	snprintf(other, sizeof(other), "%s/admin.key", dir);
	struct tls_config none = { .cert_file = NULL, .key_file = k };
	struct tls_config missing = { .cert_file = "/nonexistent/x.pem", .key_file = k };
	struct tls_config mismatch = { .cert_file = c, .key_file = other };

	cr_assert_eq(tls_ctx_new(&none, &x), -EINVAL);
	cr_assert_eq(tls_ctx_new(&missing, &x), -EBADMSG);
	cr_assert_eq(tls_ctx_new(&mismatch, &x), -EBADMSG);
	cr_assert_eq(x, (struct tls_ctx *)0x1);
	tls_ctx_free(NULL);
	helpers_cleanup();
}
