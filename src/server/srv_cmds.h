/*
 * srv_cmds.h - the command functions (srv_cmd.c: connection and admin
 * commands; srv_data.c: data commands) that the table in srv_cmd.c names.
 */
#ifndef COFFER_SERVER_SRV_CMDS_H
#define COFFER_SERVER_SRV_CMDS_H

#include "server/srv.h"

#define CMD_FN(name) void name(struct exec *e, struct conn *c, struct cmd *cmd, struct reply *r)

/* srv_data.c */
CMD_FN(cmd_get);
CMD_FN(cmd_set);
CMD_FN(cmd_mget);
CMD_FN(cmd_mset);
CMD_FN(cmd_del);
CMD_FN(cmd_exists);
CMD_FN(cmd_incr);
CMD_FN(cmd_incrby);
CMD_FN(cmd_decr);
CMD_FN(cmd_decrby);
CMD_FN(cmd_append);
CMD_FN(cmd_strlen);
CMD_FN(cmd_getrange);
CMD_FN(cmd_type);
CMD_FN(cmd_keys);
CMD_FN(cmd_scan);
CMD_FN(cmd_dbsize);
CMD_FN(cmd_flushdb);
CMD_FN(cmd_hset);
CMD_FN(cmd_hmset);
CMD_FN(cmd_hget);
CMD_FN(cmd_hmget);
CMD_FN(cmd_hdel);
CMD_FN(cmd_hgetall);
CMD_FN(cmd_hlen);
CMD_FN(cmd_hexists);
CMD_FN(cmd_hkeys);
CMD_FN(cmd_hvals);
CMD_FN(cmd_hscan);

/* For INFO's keyspace section: number of keys (0 if none). */
int data_key_count(struct exec *e, uint64_t *n);

#endif
