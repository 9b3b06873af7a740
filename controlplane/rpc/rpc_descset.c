/* rpc_descset.c - a names-only index of a serialized FileDescriptorSet for
 * server reflection: which file defines which symbol, which files a file
 * imports. A small protobuf wire reader, no descriptor.proto code needed.
 *
 * Invariant: every dependency of every file resolves inside the set
 * (checked at build), so a closure never misses a file.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "rpc_internal.h"

/* Field numbers in google/protobuf/descriptor.proto. */
enum {
	FDS_FILE = 1,
	FILE_NAME = 1, FILE_PACKAGE = 2, FILE_DEPENDENCY = 3, FILE_MESSAGE = 4,
	FILE_ENUM = 5, FILE_SERVICE = 6, FILE_EXTENSION = 7,
	MSG_NAME = 1, MSG_NESTED = 3, MSG_ENUM = 4, MSG_EXTENSION = 6,
	ENUM_NAME = 1,
	SVC_NAME = 1, SVC_METHOD = 2,
	METHOD_NAME = 1,
	FIELD_NUMBER = 3, FIELD_EXTENDEE = 2,
};

/* One name -> file entry. Owned by the index. */
struct sym {
	char *name;
	size_t file;
	bool service;
};

/* One extension field. Owned by the index. */
struct ext {
	char *extendee;         /* without the leading dot */
	int32_t number;
	size_t file;
};

struct rpc_descset {
	struct rpc_descfile *files;
	size_t n_files;
	char **dep_names;       /* flattened while parsing, resolved after */
	size_t *dep_file;       /* owner file of dep_names[i] */
	size_t n_dep_names;
	struct sym *syms;
	size_t n_syms, cap_syms;
	struct ext *exts;
	size_t n_exts, cap_exts;
	char **services;
	size_t n_services;
};

/* A view of one protobuf field. */
struct field {
	uint32_t number;
	uint32_t wire;
	uint64_t varint;
	const uint8_t *data;
	size_t len;
};

static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
	uint64_t v = 0;

	for (unsigned shift = 0; shift < 64; shift += 7) {
		uint8_t b;

		if (*p >= end)
			return -EBADMSG;
		b = *(*p)++;
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*out = v;
			return 0;
		}
	}
	return -EBADMSG;
}

/* Next field of [*p, end): 1 = got one, 0 = end, -EBADMSG. */
static int next_field(const uint8_t **p, const uint8_t *end, struct field *f)
{
	uint64_t key, len;

	if (*p >= end)
		return 0;
	if (read_varint(p, end, &key))
		return -EBADMSG;
	f->number = (uint32_t)(key >> 3);
	f->wire = (uint32_t)(key & 7);
	f->data = NULL;
	f->len = 0;
	switch (f->wire) {
	case 0:
		return read_varint(p, end, &f->varint) ? -EBADMSG : 1;
	case 1:
		if (end - *p < 8)
			return -EBADMSG;
		*p += 8;
		return 1;
	case 2:
		if (read_varint(p, end, &len) || len > (uint64_t)(end - *p))
			return -EBADMSG;
		f->data = *p;
		f->len = (size_t)len;
		*p += len;
		return 1;
	case 5:
		if (end - *p < 4)
			return -EBADMSG;
		*p += 4;
		return 1;
	default:
		return -EBADMSG;
	}
}

static char *join(const char *scope, const uint8_t *name, size_t len)
{
	size_t sl = scope && *scope ? strlen(scope) : 0;
	char *out = malloc(sl + 1 + len + 1);

	if (!out)
		return NULL;
	if (sl) {
		memcpy(out, scope, sl);
		out[sl++] = '.';
	}
	memcpy(out + sl, name, len);
	out[sl + len] = '\0';
	return out;
}

static int add_sym(struct rpc_descset *d, char *name, size_t file, bool service)
{
	if (!name)
		return -ENOMEM;
	if (d->n_syms == d->cap_syms) {
		size_t ncap = d->cap_syms ? d->cap_syms * 2 : 64;
		struct sym *ns = realloc(d->syms, ncap * sizeof(*ns));

		if (!ns) {
			free(name);
			return -ENOMEM;
		}
		d->syms = ns;
		d->cap_syms = ncap;
	}
	d->syms[d->n_syms++] = (struct sym){ name, file, service };
	return 0;
}

/* The name field (number 1) of a nested descriptor message. */
static int name_of(const uint8_t *p, size_t len, const uint8_t **name, size_t *name_len)
{
	const uint8_t *end = p + len;
	struct field f;
	int r;

	*name = NULL;
	*name_len = 0;
	while ((r = next_field(&p, end, &f)) == 1)
		if (f.number == 1 && f.wire == 2) {
			*name = f.data;
			*name_len = f.len;
		}
	return r < 0 ? r : (*name ? 0 : -EBADMSG);
}

static int add_ext(struct rpc_descset *d, const uint8_t *p, size_t len, size_t file)
{
	const uint8_t *end = p + len;
	struct field f;
	struct ext e = { .file = file };
	int r;

	while ((r = next_field(&p, end, &f)) == 1) {
		if (f.number == FIELD_EXTENDEE && f.wire == 2) {
			const uint8_t *n = f.data;
			size_t nl = f.len;

			if (nl && n[0] == '.') {
				n++;
				nl--;
			}
			free(e.extendee);
			e.extendee = join(NULL, n, nl);
			if (!e.extendee)
				return -ENOMEM;
		} else if (f.number == FIELD_NUMBER && f.wire == 0) {
			e.number = (int32_t)f.varint;
		}
	}
	if (r < 0 || !e.extendee) {
		free(e.extendee);
		return r < 0 ? r : -EBADMSG;
	}
	if (d->n_exts == d->cap_exts) {
		size_t ncap = d->cap_exts ? d->cap_exts * 2 : 8;
		struct ext *ne = realloc(d->exts, ncap * sizeof(*ne));

		if (!ne) {
			free(e.extendee);
			return -ENOMEM;
		}
		d->exts = ne;
		d->cap_exts = ncap;
	}
	d->exts[d->n_exts++] = e;
	return 0;
}

static int index_message(struct rpc_descset *d, const char *scope, const uint8_t *p,
			 size_t len, size_t file, int depth)
{
	const uint8_t *end = p + len, *name;
	size_t name_len;
	struct field f;
	char *full;
	int r;

	if (depth > 32)
		return -EBADMSG;
	r = name_of(p, len, &name, &name_len);
	if (r)
		return r;
	full = join(scope, name, name_len);
	if (!full)
		return -ENOMEM;
	while ((r = next_field(&p, end, &f)) == 1) {
		if (f.wire != 2)
			continue;
		if (f.number == MSG_NESTED)
			r = index_message(d, full, f.data, f.len, file, depth + 1);
		else if (f.number == MSG_ENUM)
			r = name_of(f.data, f.len, &name, &name_len) ? -EBADMSG :
				add_sym(d, join(full, name, name_len), file, false);
		else if (f.number == MSG_EXTENSION)
			r = add_ext(d, f.data, f.len, file);
		else
			r = 0;
		if (r)
			break;
	}
	if (r < 0) {
		free(full);
		return r;
	}
	return add_sym(d, full, file, false);
}

static int index_service(struct rpc_descset *d, const char *pkg, const uint8_t *p,
			 size_t len, size_t file)
{
	const uint8_t *end = p + len, *name;
	size_t name_len;
	struct field f;
	char *full, **ns;
	int r;

	r = name_of(p, len, &name, &name_len);
	if (r)
		return r;
	full = join(pkg, name, name_len);
	if (!full)
		return -ENOMEM;
	while ((r = next_field(&p, end, &f)) == 1) {
		if (f.number != SVC_METHOD || f.wire != 2)
			continue;
		if (name_of(f.data, f.len, &name, &name_len)) {
			r = -EBADMSG;
			break;
		}
		r = add_sym(d, join(full, name, name_len), file, false);
		if (r)
			break;
	}
	if (r < 0)
		goto out_free;
	ns = realloc(d->services, (d->n_services + 1) * sizeof(*ns));
	if (!ns) {
		r = -ENOMEM;
		goto out_free;
	}
	d->services = ns;
	d->services[d->n_services] = strdup(full);
	if (!d->services[d->n_services]) {
		r = -ENOMEM;
		goto out_free;
	}
	d->n_services++;
	return add_sym(d, full, file, true);
out_free:
	free(full);
	return r;
}

static int index_file(struct rpc_descset *d, size_t idx)
{
	struct rpc_descfile *df = &d->files[idx];
	const uint8_t *p = df->raw, *end = df->raw + df->raw_len;
	struct field f;
	int r;

	/* name and package first: symbols need the package */
	while ((r = next_field(&p, end, &f)) == 1) {
		if (f.wire != 2)
			continue;
		if (f.number == FILE_NAME && !df->name) {
			df->name = join(NULL, f.data, f.len);
			if (!df->name)
				return -ENOMEM;
		} else if (f.number == FILE_PACKAGE && !df->package) {
			df->package = join(NULL, f.data, f.len);
			if (!df->package)
				return -ENOMEM;
		}
	}
	if (r < 0 || !df->name)
		return -EBADMSG;
	if (!df->package) {
		df->package = strdup("");
		if (!df->package)
			return -ENOMEM;
	}
	p = df->raw;
	while ((r = next_field(&p, end, &f)) == 1) {
		const uint8_t *name;
		size_t name_len;

		if (f.wire != 2)
			continue;
		switch (f.number) {
		case FILE_DEPENDENCY: {
			char **nn = realloc(d->dep_names, (d->n_dep_names + 1) * sizeof(*nn));
			size_t *nf = nn ? realloc(d->dep_file,
						  (d->n_dep_names + 1) * sizeof(*nf)) : NULL;

			if (nn)
				d->dep_names = nn;
			if (!nf)
				return -ENOMEM;
			d->dep_file = nf;
			d->dep_names[d->n_dep_names] = join(NULL, f.data, f.len);
			if (!d->dep_names[d->n_dep_names])
				return -ENOMEM;
			d->dep_file[d->n_dep_names++] = idx;
			r = 0;
			break;
		}
		case FILE_MESSAGE:
			r = index_message(d, df->package, f.data, f.len, idx, 0);
			break;
		case FILE_ENUM:
			r = name_of(f.data, f.len, &name, &name_len) ? -EBADMSG :
				add_sym(d, join(df->package, name, name_len), idx, false);
			break;
		case FILE_SERVICE:
			r = index_service(d, df->package, f.data, f.len, idx);
			break;
		case FILE_EXTENSION:
			r = add_ext(d, f.data, f.len, idx);
			break;
		default:
			r = 0;
		}
		if (r)
			return r;
	}
	return r < 0 ? r : 0;
}

static int sym_cmp(const void *a, const void *b)
{
	return strcmp(((const struct sym *)a)->name, ((const struct sym *)b)->name);
}

int rpc_descset_new(const uint8_t *set, size_t len, struct rpc_descset **ret)
{
	struct rpc_descset *d = calloc(1, sizeof(*d));
	const uint8_t *p = set, *end = set + len;
	struct field f;
	size_t cap = 0;
	int r;

	if (!d)
		return -ENOMEM;
	while ((r = next_field(&p, end, &f)) == 1) {
		if (f.number != FDS_FILE || f.wire != 2)
			continue;
		if (d->n_files == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct rpc_descfile *nf = realloc(d->files, ncap * sizeof(*nf));

			if (!nf) {
				r = -ENOMEM;
				goto out_free;
			}
			d->files = nf;
			cap = ncap;
		}
		memset(&d->files[d->n_files], 0, sizeof(d->files[0]));
		d->files[d->n_files].raw = f.data;
		d->files[d->n_files].raw_len = f.len;
		d->n_files++;
	}
	if (r < 0 || d->n_files == 0) {
		r = -EBADMSG;
		goto out_free;
	}
	for (size_t i = 0; i < d->n_files; i++) {
		r = index_file(d, i);
		if (r)
			goto out_free;
	}
	for (size_t i = 0; i < d->n_dep_names; i++) {
		struct rpc_descfile *df = &d->files[d->dep_file[i]];
		long dep = rpc_descset_find_file(d, d->dep_names[i]);
		size_t *nd;

		if (dep < 0) {
			r = -EBADMSG;
			goto out_free;
		}
		nd = realloc(df->deps, (df->n_deps + 1) * sizeof(*nd));
		if (!nd) {
			r = -ENOMEM;
			goto out_free;
		}
		df->deps = nd;
		df->deps[df->n_deps++] = (size_t)dep;
	}
	qsort(d->syms, d->n_syms, sizeof(*d->syms), sym_cmp);
	*ret = d;
	return 0;
out_free:
	rpc_descset_free(d);
	return r;
}

void rpc_descset_free(struct rpc_descset *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->n_files; i++) {
		free(d->files[i].name);
		free(d->files[i].package);
		free(d->files[i].deps);
	}
	free(d->files);
	for (size_t i = 0; i < d->n_dep_names; i++)
		free(d->dep_names[i]);
	free(d->dep_names);
	free(d->dep_file);
	for (size_t i = 0; i < d->n_syms; i++)
		free(d->syms[i].name);
	free(d->syms);
	for (size_t i = 0; i < d->n_exts; i++)
		free(d->exts[i].extendee);
	free(d->exts);
	for (size_t i = 0; i < d->n_services; i++)
		free(d->services[i]);
	free(d->services);
	free(d);
}

size_t rpc_descset_n_files(const struct rpc_descset *d)
{
	return d->n_files;
}

const struct rpc_descfile *rpc_descset_file(const struct rpc_descset *d, size_t i)
{
	return &d->files[i];
}

long rpc_descset_find_file(const struct rpc_descset *d, const char *name)
{
	for (size_t i = 0; i < d->n_files; i++)
		if (d->files[i].name && strcmp(d->files[i].name, name) == 0)
			return (long)i;
	return -1;
}

static const struct sym *find_sym(const struct rpc_descset *d, const char *symbol)
{
	struct sym key = { .name = (char *)symbol };

	if (symbol[0] == '.')
		key.name++;
	return bsearch(&key, d->syms, d->n_syms, sizeof(*d->syms), sym_cmp);
}

long rpc_descset_find_symbol(const struct rpc_descset *d, const char *symbol)
{
	const struct sym *s = find_sym(d, symbol);

	return s ? (long)s->file : -1;
}

bool rpc_descset_is_service(const struct rpc_descset *d, const char *symbol)
{
	const struct sym *s = find_sym(d, symbol);

	return s && s->service;
}

size_t rpc_descset_n_services(const struct rpc_descset *d)
{
	return d->n_services;
}

const char *rpc_descset_service(const struct rpc_descset *d, size_t i)
{
	return d->services[i];
}

long rpc_descset_find_extension(const struct rpc_descset *d, const char *type, int32_t number)
{
	if (type[0] == '.')
		type++;
	for (size_t i = 0; i < d->n_exts; i++)
		if (d->exts[i].number == number && strcmp(d->exts[i].extendee, type) == 0)
			return (long)d->exts[i].file;
	return -1;
}

size_t rpc_descset_extension_numbers(const struct rpc_descset *d, const char *type,
				     int32_t *out, size_t max)
{
	size_t n = 0;

	if (type[0] == '.')
		type++;
	for (size_t i = 0; i < d->n_exts && n < max; i++)
		if (strcmp(d->exts[i].extendee, type) == 0)
			out[n++] = d->exts[i].number;
	return n;
}

size_t rpc_descset_closure(const struct rpc_descset *d, size_t file, size_t *out)
{
	size_t n = 0;

	/* breadth-first over imports; out doubles as the queue */
	out[n++] = file;
	for (size_t head = 0; head < n; head++) {
		const struct rpc_descfile *df = &d->files[out[head]];

		for (size_t i = 0; i < df->n_deps; i++) {
			bool seen = false;

			for (size_t j = 0; j < n && !seen; j++)
				seen = out[j] == df->deps[i];
			if (!seen)
				out[n++] = df->deps[i];
		}
	}
	return n;
}
