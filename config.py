#!/usr/bin/env python3
"""Write the influx-proxy configuration into Redis.

Edit the four dicts below (BACKENDS, KEYMAPS, NODES, DEFAULT_NODE), then run

    python3 config.py [-H HOST] [-p PORT] [-d DB] [-P PASSWORD]

Running proxies pick up the new configuration on their next poll of Redis (influx-proxy
--poll-interval, default every 5 s). The old keys (default_node, n:*, b:*, m:*) are replaced in one
MULTI/EXEC transaction, so a proxy never reads a half-written configuration.
See `python3 config.py --help` for the other modes (--json, --dry-run, --from FILE).
"""

import argparse
import json
import re
import sys

# --------------------------------------------------------------------------------------------------
# BACKENDS: backend name -> fields. One entry per InfluxDB server. Stored in Redis as hash b:<name>.
# Values may be strings, ints or booleans (True/False are stored as 1/0).
# Fields (only `url` is required):
#
#   url              required  http://host[:port] or https://host[:port] of the InfluxDB (no path; put
#                              credentials in username/password, not in the url)
#   db               ""        if set, every line sent to this backend goes to this database, whatever
#                              database the client wrote to
#   zone             ""        zone of the backend; queries prefer healthy backends of the node's zone
#   interval         1000      ms: a batch is sent once its oldest line is this old
#   timeout          10000     ms: timeout of one write request to the backend
#   timeoutquery     600000    ms: timeout of one query request to the backend
#   maxrowlimit      10000     lines: a batch is sent once it holds this many lines (at least 1)
#   checkinterval    1000      ms between two health pings (/ping) of the backend
#   rewriteinterval  10000     ms: longest pause between two retries while the backend fails (the pause
#                              starts at 100 ms and doubles up to this)
#   writeonly        0         1 = only written to, never asked queries (e.g. an archive)
#   gzip             1         compression level (1-12) of the batches sent to it, 0 = send uncompressed
#   maxdisk          4294967296  (4 GiB) bytes of disk the unsent data of this backend may use;
#                              past it, new lines for it are dropped and counted
#   username         ""        user the proxy authenticates as at this backend
#   password         ""        its password (needs username)
#   tlsca            ""        https url only: PEM file of the CA(s) the backend's certificate must chain
#                              to, instead of the system's trust store
#   tlsinsecure      0         https url only: 1 = do not verify the backend's certificate (logged as a
#                              warning at every config load)
BACKENDS = {
    'local': {
        'url': 'http://127.0.0.1:8086',
    },
    'local2': {
        'url': 'http://127.0.0.1:8087',
        'interval': 200,
    },
}

# --------------------------------------------------------------------------------------------------
# KEYMAPS: measurement -> list of backend names (each must be in BACKENDS).
# Stored as list m:<measurement>.
# Every line of that measurement is written to all the listed backends (replication); a query on it
# goes to one healthy backend of the list. Lookup order: the exact measurement name, then the longest
# key that is a prefix of the name, then `_default_`, the catch-all. A line that matches nothing (no
# `_default_`) is counted and dropped.
KEYMAPS = {
    'cpu': ['local', 'local2'],
    'temperature': ['local2'],
    '_default_': ['local'],
}

# --------------------------------------------------------------------------------------------------
# NODES: proxy node name -> fields. Stored as hash n:<name>. A proxy started with `--node NAME` reads
# DEFAULT_NODE and then n:NAME on top of it (n:NAME wins field by field). Fields (all optional):
#
#   listenaddr    ":6666"   address to serve HTTP on; ":PORT" = every interface
#   db            ""        if set, clients must use this database (others get 404 "database not found")
#   zone          ""        zone of the node: queries prefer backends with the same zone
#   nexts         ""        comma-separated backend names that receive every line, whatever its
#                           measurement (a Python list of names is accepted too)
#   interval      10        seconds between two self-statistics points (measurement influxdb.cluster),
#                           0 = off
#   idletimeout   10        seconds a keep-alive client connection may stay idle
#   writetracing  0         1 = log every write request body
#   querytracing  0         1 = log every query
#   username      ""        if set, clients must present these credentials (u/p or Basic auth)
#   password      ""        the password clients must present (needs username)
#   querydeny     ""        comma-separated query rules to enforce on top of the defaults
#   queryallow    ""        comma-separated query rules to lift (wins over querydeny)
#   tlscert       ""        PEM certificate chain file: with tlskey, the listener serves https only
#   tlskey        ""        PEM private key file of tlscert
#   tlsclientca   ""        PEM file of the CA(s) client certificates must chain to: set, clients
#                           without such a certificate are refused (needs tlscert and tlskey)
#
# Query rules: select_star, select_no_time, select_into, delete, drop, grant, revoke, kill, alter,
# create, create_user, set_password. Enforced by default: select_star (SELECT *), select_no_time
# (SELECT without a time condition), select_into, delete, drop, grant, revoke, kill, alter (retention
# policies) and create_user. Not enforced by default: create (any CREATE) and set_password.
# Example: 'queryallow': 'select_star,select_no_time', 'querydeny': 'create'.
NODES = {
    'l1': {
        'listenaddr': '127.0.0.1:6666',
    },
}

# --------------------------------------------------------------------------------------------------
# DEFAULT_NODE: node fields (as in NODES above) shared by every node. Stored as hash default_node.
DEFAULT_NODE = {
    'listenaddr': '127.0.0.1:6666',
}

# --------------------------------------------------------------------------------------------------
# Nothing below needs editing.

NODE_FIELDS = (
    'listenaddr', 'db', 'zone', 'nexts', 'interval', 'idletimeout', 'writetracing', 'querytracing',
    'username', 'password', 'querydeny', 'queryallow', 'tlscert', 'tlskey', 'tlsclientca',
)
BACKEND_FIELDS = (
    'url', 'db', 'zone', 'interval', 'timeout', 'timeoutquery', 'maxrowlimit', 'checkinterval',
    'rewriteinterval', 'writeonly', 'gzip', 'maxdisk', 'username', 'password', 'tlsca', 'tlsinsecure',
)
# Fields holding a whole number >= 0, and those holding a 0/1 flag.
NUMBER_FIELDS = {
    'interval', 'idletimeout', 'timeout', 'timeoutquery', 'maxrowlimit', 'checkinterval',
    'rewriteinterval', 'gzip', 'maxdisk',
}
FLAG_FIELDS = {'writetracing', 'querytracing', 'writeonly', 'tlsinsecure'}
QUERY_RULES = (
    'select_star', 'select_no_time', 'select_into', 'delete', 'drop', 'grant', 'revoke', 'kill',
    'alter', 'create', 'create_user', 'set_password',
)
SECTIONS = ('DEFAULT_NODE', 'NODES', 'BACKENDS', 'KEYMAPS')
CONFIG_PATTERNS = ('n:*', 'b:*', 'm:*')


class ConfigError(Exception):
    """A problem in the configuration; the message names the dict, key and field."""


def to_redis_value(where, value):
    """The string Redis stores for a field value: ints in decimal, booleans as 0/1."""
    if isinstance(value, bool):
        return '1' if value else '0'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    raise ConfigError('%s must be a string, an int or a boolean, not %s'
                      % (where, type(value).__name__))


def check_fields(section, key, fields, known):
    """Validates one field dict and returns it with every value as a string."""
    where = section if key is None else '%s[%r]' % (section, key)
    if not isinstance(fields, dict):
        raise ConfigError('%s must be a dict of fields, not %s' % (where, type(fields).__name__))
    out = {}
    for field, value in fields.items():
        if field not in known:
            raise ConfigError('%s: unknown field %r (known: %s)' % (where, field, ', '.join(known)))
        place = '%s: field %r' % (where, field)
        if field == 'nexts' and isinstance(value, (list, tuple)):
            if not all(isinstance(v, str) for v in value):
                raise ConfigError('%s must be a comma-separated string or a list of names' % place)
            value = ','.join(value)
        text = to_redis_value(place, value)
        if field in NUMBER_FIELDS and text.strip() and not text.strip().isdigit():
            raise ConfigError('%s must be a whole number >= 0, not %r' % (place, value))
        if field in FLAG_FIELDS and text.strip() not in ('', '0', '1', 'true', 'false'):
            raise ConfigError('%s must be 0 or 1, not %r' % (place, value))
        out[field] = text
    return out


def split_names(text):
    return [n.strip() for n in text.split(',') if n.strip()]


def check_node(where, fields, backends, tls=True):
    """Checks the cross-field rules of one node (DEFAULT_NODE merged with its own fields); `tls`:
    also the rules on the TLS fields, which may be completed by each node's own."""
    for name in split_names(fields.get('nexts', '')):
        if name not in backends:
            raise ConfigError('%s: field \'nexts\' names backend %r, which is not in BACKENDS'
                              % (where, name))
    for field in ('querydeny', 'queryallow'):
        for rule in split_names(fields.get(field, '')):
            if rule.lower() not in QUERY_RULES:
                raise ConfigError('%s: field %r: unknown query rule %r (known: %s)'
                                  % (where, field, rule, ', '.join(QUERY_RULES)))
    if fields.get('password', '').strip() and not fields.get('username', '').strip():
        raise ConfigError('%s: field \'password\' is set but \'username\' is not' % where)
    listen = fields.get('listenaddr', '').strip()
    if listen and not re.fullmatch(r'.*:[0-9]{1,5}', listen):
        raise ConfigError('%s: field \'listenaddr\' must be HOST:PORT or :PORT, not %r'
                          % (where, listen))
    if not tls:
        return
    cert, key = fields.get('tlscert', '').strip(), fields.get('tlskey', '').strip()
    if bool(cert) != bool(key):
        raise ConfigError('%s: fields \'tlscert\' and \'tlskey\' must be set together' % where)
    if fields.get('tlsclientca', '').strip() and not cert:
        raise ConfigError('%s: field \'tlsclientca\' needs \'tlscert\' and \'tlskey\'' % where)


def validate(default_node, nodes, backends, keymaps):
    """Checks the four dicts; returns them normalised (every value a string) or raises ConfigError."""
    for section, value in (('DEFAULT_NODE', default_node), ('NODES', nodes),
                           ('BACKENDS', backends), ('KEYMAPS', keymaps)):
        if not isinstance(value, dict):
            raise ConfigError('%s must be a dict, not %s' % (section, type(value).__name__))

    out_backends = {}
    for name, fields in backends.items():
        if not isinstance(name, str) or not name.strip() or ',' in name:
            raise ConfigError('BACKENDS: %r is not a usable backend name (non-empty, no commas)'
                              % (name,))
        checked = check_fields('BACKENDS', name, fields, BACKEND_FIELDS)
        url = checked.get('url', '').strip()
        if not url:
            raise ConfigError('BACKENDS[%r]: field \'url\' is required' % name)
        if not re.fullmatch(r'https?://[^/@\s]+/?', url):
            raise ConfigError('BACKENDS[%r]: field \'url\' must be http(s)://HOST[:PORT], not %r'
                              % (name, url))
        if checked.get('gzip', '').strip() and int(checked['gzip']) > 12:
            raise ConfigError('BACKENDS[%r]: field \'gzip\' must be 0 (off) to 12, not %s'
                              % (name, checked['gzip']))
        if checked.get('maxrowlimit', '').strip() and int(checked['maxrowlimit']) == 0:
            raise ConfigError('BACKENDS[%r]: field \'maxrowlimit\' must be at least 1' % name)
        if checked.get('password', '').strip() and not checked.get('username', '').strip():
            raise ConfigError('BACKENDS[%r]: field \'password\' is set but \'username\' is not'
                              % name)
        out_backends[name] = checked

    out_default = check_fields('DEFAULT_NODE', None, default_node, NODE_FIELDS)
    out_nodes = {}
    for name, fields in nodes.items():
        if not isinstance(name, str) or not name:
            raise ConfigError('NODES: %r is not a usable node name' % (name,))
        out_nodes[name] = check_fields('NODES', name, fields, NODE_FIELDS)
    # A DEFAULT_NODE may hold part of the TLS settings (a shared tlsclientca, say) that every node
    # completes with its own certificate: checked as a whole only when no node completes it.
    check_node('DEFAULT_NODE', out_default, out_backends, tls=not out_nodes)
    for name, fields in out_nodes.items():
        merged = dict(out_default)
        merged.update(fields)
        check_node('NODES[%r]' % name, merged, out_backends)

    out_keymaps = {}
    for measurement, names in keymaps.items():
        if not isinstance(measurement, str) or not measurement:
            raise ConfigError('KEYMAPS: %r is not a usable measurement name' % (measurement,))
        where = 'KEYMAPS[%r]' % measurement
        if isinstance(names, str) or not isinstance(names, (list, tuple)):
            raise ConfigError('%s must be a list of backend names' % where)
        if not names:
            raise ConfigError('%s lists no backends' % where)
        for backend in names:
            if backend not in out_backends:
                raise ConfigError('%s names backend %r, which is not in BACKENDS'
                                  % (where, backend))
        out_keymaps[measurement] = list(names)
    return out_default, out_nodes, out_backends, out_keymaps


def load_json(path):
    """Reads a config in the --json format; a missing section is empty."""
    try:
        if path == '-':
            data = json.load(sys.stdin)
        else:
            with open(path, encoding='utf-8') as f:
                data = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError('%s: %s' % (path, e))
    if not isinstance(data, dict):
        raise ConfigError('%s: the top level must be an object' % path)
    for key in data:
        if key not in SECTIONS:
            raise ConfigError('%s: unknown top-level key %r (expected %s)'
                              % (path, key, ', '.join(SECTIONS)))
    return tuple(data.get(section, {}) for section in SECTIONS)


def redis_commands(old_keys, default_node, nodes, backends, keymaps):
    """The commands that replace the configuration, as argument lists (MULTI/EXEC not included)."""
    cmds = []
    delete = ['default_node'] + sorted(k for k in old_keys if k != 'default_node')
    cmds.append(['DEL'] + delete)
    if default_node:
        cmds.append(hset('default_node', default_node))
    for name, fields in nodes.items():
        if fields:
            cmds.append(hset('n:' + name, fields))
    for name, fields in backends.items():
        cmds.append(hset('b:' + name, fields))
    for measurement, names in keymaps.items():
        cmds.append(['RPUSH', 'm:' + measurement] + names)
    return cmds


def hset(key, fields):
    cmd = ['HSET', key]
    for field, value in fields.items():
        cmd += [field, value]
    return cmd


def quote(arg):
    """An argument as redis-cli reads it on its command line or stdin."""
    if arg and re.fullmatch(r'[A-Za-z0-9_.:/*@%+=,-]+', arg):
        return arg
    escaped = arg.replace('\\', '\\\\').replace('"', '\\"')
    escaped = escaped.replace('\n', '\\n').replace('\r', '\\r').replace('\t', '\\t')
    return '"%s"' % escaped


def scan_config_keys(client):
    keys = set()
    for pattern in CONFIG_PATTERNS:
        for key in client.scan_iter(match=pattern, count=1000):
            keys.add(key)
    return keys


def connect(args):
    import redis  # imported here so --json and --help work without the package
    options = dict(host=args.host, port=args.port, db=args.db, password=args.password,
                   decode_responses=True, socket_timeout=10, socket_connect_timeout=5)
    try:
        # RESP2 explicitly: newer redis-py would open with HELLO 3, which Redis < 6 refuses.
        return redis.Redis(protocol=2, **options)
    except TypeError:  # redis-py < 5 has no protocol option and speaks RESP2 anyway
        return redis.Redis(**options)


def summary(default_node, nodes, backends, keymaps):
    def names(d):
        return ', '.join(d) if d else '-'
    return ('default_node (%d fields), %d node(s) [%s], %d backend(s) [%s], %d keymap(s) [%s]'
            % (len(default_node), len(nodes), names(nodes), len(backends), names(backends),
               len(keymaps), names(keymaps)))


def parse_args(argv):
    parser = argparse.ArgumentParser(
        add_help=False,
        description='Write the influx-proxy configuration (the BACKENDS, KEYMAPS, NODES and '
                    'DEFAULT_NODE dicts at the top of this file) into Redis, replacing the keys '
                    'default_node, n:*, b:* and m:* in one transaction.',
        epilog='--from FILE uses a JSON file in the --json format instead of the dicts in this '
               'file, e.g. `python3 config.py --json > cfg.json`, edit it, then '
               '`python3 config.py --from cfg.json`. The same JSON file also works as '
               '`influx-proxy --config cfg.json`, without Redis.')
    parser.add_argument('-H', '--host', default='127.0.0.1', help='redis host (default 127.0.0.1)')
    parser.add_argument('-p', '--port', type=int, default=6379, help='redis port (default 6379)')
    parser.add_argument('-d', '--db', type=int, default=0, help='redis database number (default 0)')
    parser.add_argument('-P', '--password', default=None, help='redis password (default: none)')
    parser.add_argument('--from', dest='source', metavar='FILE',
                        help='take the configuration from this JSON file (the --json format; '
                             '"-" = stdin) instead of the dicts in config.py')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--json', action='store_true',
                      help='print the configuration as JSON (the format of influx-proxy --config '
                           'FILE) instead of writing Redis')
    mode.add_argument('--dry-run', action='store_true',
                      help='print the redis commands that would be run (redis-cli syntax), '
                           'write nothing')
    parser.add_argument('--help', action='help', help='show this help and exit')
    parser.add_argument('-h', dest='short_h', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.short_h:
        parser.error('-h is not an option: help is --help, the redis host is -H')
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.source:
            sections = load_json(args.source)
        else:
            sections = (DEFAULT_NODE, NODES, BACKENDS, KEYMAPS)
        default_node, nodes, backends, keymaps = validate(*sections)
    except ConfigError as e:
        print('config.py: error: %s' % e, file=sys.stderr)
        return 1

    if args.json:
        print(json.dumps({'DEFAULT_NODE': default_node, 'NODES': nodes,
                          'BACKENDS': backends, 'KEYMAPS': keymaps}, indent=2))
        return 0

    where = 'redis %s:%d db %d' % (args.host, args.port, args.db)
    try:
        import redis
    except ImportError:
        print('config.py: error: the Python package "redis" is missing '
              '(pip install redis, or apt-get install python3-redis)', file=sys.stderr)
        return 1

    try:
        client = connect(args)
        old_keys = scan_config_keys(client)
    except redis.RedisError as e:
        if not args.dry_run:
            print('config.py: error: %s: %s' % (where, e), file=sys.stderr)
            return 1
        print('config.py: warning: cannot list the old n:*, b:*, m:* keys (%s: %s)' % (where, e),
              file=sys.stderr)
        old_keys = set()

    cmds = redis_commands(old_keys, default_node, nodes, backends, keymaps)
    if args.dry_run:
        print('MULTI')
        for cmd in cmds:
            print(' '.join(quote(a) for a in cmd))
        print('EXEC')
        print('config.py: dry run, nothing written; would write %s to %s'
              % (summary(default_node, nodes, backends, keymaps), where), file=sys.stderr)
        return 0

    try:
        pipe = client.pipeline(transaction=True)
        for cmd in cmds:
            pipe.execute_command(*cmd)
        pipe.execute()
    except redis.RedisError as e:
        print('config.py: error: %s: %s (nothing was changed)' % (where, e), file=sys.stderr)
        return 1
    stale = len(old_keys - {'n:' + n for n in nodes} - {'b:' + b for b in backends}
                - {'m:' + m for m in keymaps})
    print('wrote %s to %s (%d old key(s) removed)'
          % (summary(default_node, nodes, backends, keymaps), where, stale))
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except BrokenPipeError:  # e.g. `config.py --dry-run | head`
        sys.stderr.close()
        sys.exit(1)
