#!/usr/bin/env python3
"""A dmtree resource agent in plain Python, written from asyncapi.yaml alone.

It asks the coordinator to be managed (dmtree.manage_me), heartbeats the
manager it is assigned to, answers commands, applies the agent-side fencing
rules, and exits 0 when told that a newer instance of its resource exists.

    pika_agent.py --amqp amqp://guest:guest@127.0.0.1:5672/%2f --id web-1

Needs only `pika`. Single-threaded: timers run on the BlockingConnection.
"""
import argparse
import json
import secrets
import sys
import time

import pika

MANAGE_ME_QUEUE = "dmtree.manage_me"
MISSED_ACKS = 3  # heartbeat intervals without an ack before asking again


def log(*parts):
    print("pika_agent:", *parts, file=sys.stderr, flush=True)


class Agent:
    def __init__(self, args):
        self.params = pika.URLParameters(args.amqp)
        self.user = self.params.credentials.username  # goes into user_id
        self.resource, self.resource_type = args.id, args.type
        self.default_interval = args.heartbeat_ms / 1000.0
        self.nonce = secrets.token_hex(16)  # one per process: same nonce on reconnect
        # Everything below survives reconnections.
        self.msg_id = 0             # our own message numbers, strictly increasing
        self.term = 0               # highest assignment term seen
        self.instance = None        # our instance, once assigned
        self.assignment = None      # the current assignment (dict) or None
        self.last_assignment_msg = 0
        self.last_manager_msg = 0   # last msg_id accepted from our manager
        self.last_ack = 0.0
        self.full = True            # next heartbeat carries all properties
        self.beats = 0
        self.exit_code = None
        self.conn = self.channel = self.queue = None

    # ---------------------------------------------------------------- sending
    def next_id(self):
        self.msg_id += 1
        return self.msg_id

    def publish(self, queue, body, **props):
        """Default exchange, routing key = queue; user_id is mandatory."""
        properties = pika.BasicProperties(content_type="application/json", user_id=self.user,
                                          reply_to=self.queue, **props)
        self.channel.basic_publish("", queue, json.dumps(body).encode(), properties)

    def manage_me(self):
        # No "type" field: the queue implies it. Persistent, no expiration. The
        # instance held before (if any) lets the coordinator tell an older
        # process that a newer one replaced it.
        body = {"resource": self.resource, "resource_type": self.resource_type, "nonce": self.nonce,
                "reply_to": self.queue, "msg_id": self.next_id(), "instance": self.instance}
        self.publish(MANAGE_ME_QUEUE, body, delivery_mode=2)

    def heartbeat(self):
        a = self.assignment
        self.beats += 1
        body = {"type": "heartbeat", "resource": self.resource, "instance": a["instance"],
                "msg_id": self.next_id(), "reply_to": self.queue, "health": "up",
                "properties": {"language": "python", "beats": self.beats},  # always all of them
                "full": self.full, "actions": ["ping"], "writable": []}
        self.full = False
        self.publish(a["manager_queue"], body)

    def interval(self):
        a = self.assignment
        return a["heartbeat_ms"] / 1000.0 if a else self.default_interval

    def tick(self):
        """Every interval: heartbeat if assigned, else (or if the manager went quiet) Manage Me."""
        if self.assignment and time.monotonic() - self.last_ack > MISSED_ACKS * self.interval():
            log("no ack from", self.assignment["manager"], "- asking to be managed again")
            self.assignment = None
        if self.assignment:
            self.heartbeat()
        else:
            self.manage_me()
        self.conn.call_later(self.interval(), self.tick)

    # -------------------------------------------------------------- receiving
    def on_assignment(self, m):
        if m["term"] < self.term or (self.instance is not None and m["instance"] < self.instance):
            return log("dropped stale assignment", m["msg_id"])
        if self.instance is not None and m["term"] == self.term and m["msg_id"] <= self.last_assignment_msg:
            return log("dropped duplicate assignment", m["msg_id"])
        old = self.assignment
        if not old or (old["manager"], old["manager_instance"]) != (m["manager"], m["manager_instance"]):
            self.last_manager_msg = 0  # a new manager numbers its messages afresh
        self.term, self.instance, self.last_assignment_msg = m["term"], m["instance"], m["msg_id"]
        self.assignment, self.full, self.last_ack = m, True, time.monotonic()
        print(f"assigned {m['manager']} term={m['term']} instance={m['instance']}", flush=True)
        self.heartbeat()  # announce ourselves to the new manager right away

    def from_manager(self, m):
        """The fence for ack and command: only our current manager, not older, no duplicates."""
        a = self.assignment
        if (not a or m["manager"] != a["manager"] or m["manager_instance"] != a["manager_instance"]
                or m["term"] < a["term"] or m["instance"] != self.instance):
            log("dropped stale", m["type"], m["msg_id"])
            return False
        if m["msg_id"] <= self.last_manager_msg:
            log("dropped duplicate", m["type"], m["msg_id"])
            return False
        self.last_manager_msg = m["msg_id"]
        return True

    def run_command(self, m):
        op = m["op"]
        if op == "exec" and m["action"] == "ping":
            ok, output = True, {"pong": True, "data": m.get("data")}
        elif op == "exec":
            ok, output = False, {"error": "unknown action " + str(m["action"])}
        elif op == "set":
            ok, output = False, {"error": str(m["property"]) + " is not writable"}
        else:  # respawn
            ok, output = False, {"error": "this resource has no spawn command"}
        body = {"type": "result", "resource": self.resource, "instance": m["instance"],
                "msg_id": self.next_id(), "command_id": m["command_id"], "ok": ok, "output": output}
        self.publish(self.assignment["manager_queue"], body)

    def on_message(self, _channel, _method, _props, body):
        try:
            m = json.loads(body)
            kind = m["type"]
            if m.get("resource") != self.resource:
                return log("dropped message for", m.get("resource"))
            if kind == "assignment":
                self.on_assignment(m)
            elif kind == "ack":
                if self.from_manager(m):
                    self.last_ack = time.monotonic()
            elif kind == "command":
                if self.from_manager(m):
                    self.run_command(m)
            elif kind == "shutdown":
                # Obeyed from any manager: a newer instance of this resource exists.
                if self.instance is not None and m["instance"] == self.instance and m["term"] >= self.term:
                    log("shutdown:", m.get("reason"))
                    self.exit_code = 0
                else:
                    log("dropped shutdown", m["msg_id"])
            elif kind == "unknown":
                if self.assignment and m["manager"] == self.assignment["manager"]:
                    log(m["manager"], "does not hold us - asking to be managed again")
                    self.assignment = None
                    self.manage_me()
            else:
                log("dropped unknown type", kind)
        except (ValueError, KeyError, TypeError) as e:
            log("dropped malformed message:", repr(e))

    # ------------------------------------------------------------ connection
    def connect(self):
        self.conn = pika.BlockingConnection(self.params)
        self.channel = self.conn.channel()
        # Our own queue: exclusive, auto-delete, server-named (a new name per connection).
        self.queue = self.channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        self.channel.basic_consume(self.queue, self.on_message, auto_ack=True)
        self.full = True  # the manager learns the new reply_to with everything
        self.tick()       # Manage Me or heartbeat now, then every interval

    def run(self):
        while self.exit_code is None:
            try:
                self.connect()
                while self.exit_code is None:
                    self.conn.process_data_events(time_limit=0.1)
            except pika.exceptions.AMQPError as e:
                log("connection lost:", repr(e), "- retrying")
                self.close()
                time.sleep(0.5)
        self.close()
        return self.exit_code

    def close(self):
        try:
            if self.conn and self.conn.is_open:
                self.conn.close()
        except pika.exceptions.AMQPError:
            pass


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--amqp", required=True, help="e.g. amqp://guest:guest@127.0.0.1:5672/%%2f")
    p.add_argument("--id", required=True, help="the resource id")
    p.add_argument("--type", default="service", help="the resource type")
    p.add_argument("--heartbeat-ms", type=int, default=500, help="interval before an assignment sets one")
    return Agent(p.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
