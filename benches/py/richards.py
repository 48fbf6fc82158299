"""A class-based task scheduler in the manner of the richards benchmark:
tasks of several kinds pass packets to each other through a scheduler."""
from common import run


class Packet:
    __slots__ = ("link", "ident", "kind", "data")

    def __init__(self, link, ident, kind):
        self.link, self.ident, self.kind, self.data = link, ident, kind, [0] * 4


class Task:
    def __init__(self, scheduler, ident, priority):
        self.scheduler, self.ident, self.priority = scheduler, ident, priority
        self.queue = []
        self.count = 0

    def step(self):
        raise NotImplementedError


class Worker(Task):
    def step(self):
        if not self.queue:
            return
        packet = self.queue.pop()
        self.count += 1
        packet.data = [(self.count + i) % 26 for i in range(4)]
        target = (self.ident + 1 + packet.kind) % len(self.scheduler.tasks)
        self.scheduler.send(target, packet)


class Device(Task):
    def step(self):
        if self.queue:
            packet = self.queue.pop(0)
            self.count += 1
            # a device consumes the packet and issues a fresh one
            self.scheduler.send(0, Packet(None, self.ident, self.count % 3))


class Idle(Task):
    def step(self):
        self.count += 1
        if self.count % 3 == 0:
            self.scheduler.send(1 + self.count % (len(self.scheduler.tasks) - 1),
                                Packet(None, self.ident, self.count % 2))


class Scheduler:
    def __init__(self, workers, devices):
        self.tasks = [Idle(self, 0, 0)]
        for i in range(workers):
            self.tasks.append(Worker(self, len(self.tasks), 1 + i % 3))
        for i in range(devices):
            self.tasks.append(Device(self, len(self.tasks), 5))

    def send(self, target, packet):
        self.tasks[target].queue.append(packet)

    def run(self, rounds):
        for _ in range(rounds):
            for task in sorted(self.tasks, key=lambda t: -t.priority):
                task.step()
        return sum(task.count for task in self.tasks)


def work():
    return sum(Scheduler(workers=20, devices=6).run(25000) for _ in range(3))


run(work)
