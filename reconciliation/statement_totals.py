"""The totals a camt.053 statement states about itself, checked against what it lists.

A bank states an entry's amount (`Ntry/Amt`) beside the transactions it is made of
(`NtryDtls/TxDtls`), a batch's count and total (`NtryDtls/Btch/NbOfTxs`, `TtlAmt`) and the
statement's counts and sums (`Stmt/TxsSummry`). When they disagree the file is inconsistent in
itself: which figure is the money really received cannot be told from it, so the whole file is
refused (finance asks the bank for a corrected one) rather than some figure taken on trust.

Pure arithmetic in integer fen, no XML: statement_camt reads the elements and passes the values.
Amounts are signed in the direction of what contains them (a transaction of the other direction
than its entry counts against it), because the entry amount is the net of its transactions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flask_babel import lazy_gettext as _l

from core.money import format_yuan
from reconciliation.statement_lines import format_error, shown


def _yuan(fen: int) -> str:
    return format_yuan(fen, grouping=False)  # as the bank's file writes it, so finance can find it there


def entry_label(index: int, entry_ref: str | None, account_servicer_ref: str | None) -> str:
    """"3（NtryRef 3，AcctSvcrRef ICBC…）": the entry's position, and what the bank calls it. Without
    names it ends in a space, so that the messages read "条目 3 金额…" either way."""
    names = [f"{name} {shown(value)}" for name, value in (("NtryRef", entry_ref), ("AcctSvcrRef", account_servicer_ref))
             if value]
    return f"{index}（{'，'.join(names)}）" if names else f"{index} "


@dataclass
class EntryDetails:
    """One NtryDtls of an entry: its Btch figures, if stated, and the sum of its TxDtls."""

    where: str  # "Stmt/Ntry[3]/NtryDtls" (with [m] when the entry has several)
    stated_count: int | None = None  # Btch/NbOfTxs
    stated_total: int | None = None  # Btch/TtlAmt, signed in the entry's direction
    transactions: int = 0
    # the signed sum of the transactions' own amounts; None once one of them has none
    transactions_total: int | None = 0

    def add(self, amount: int | None) -> None:
        self.transactions += 1
        if amount is None or self.transactions_total is None:
            self.transactions_total = None
        else:
            self.transactions_total += amount

    def check(self, label: str) -> None:
        if self.stated_count is not None and self.transactions and self.stated_count != self.transactions:
            raise format_error(_l("条目 %(entry)s的批量笔数（NbOfTxs）%(stated)s 与其交易明细笔数 %(counted)s 不符。",
                                  entry=label, stated=self.stated_count, counted=self.transactions),
                               f"{self.where}/Btch/NbOfTxs")
        if (self.stated_total is not None and self.transactions and self.transactions_total is not None
                and self.stated_total != self.transactions_total):
            raise format_error(_l("条目 %(entry)s的批量合计（TtlAmt）%(stated)s 与其交易明细合计 %(summed)s 不符。",
                                  entry=label, stated=_yuan(self.stated_total),
                                  summed=_yuan(self.transactions_total)),
                               f"{self.where}/Btch/TtlAmt")


def check_entry(label: str, where: str, amount: int, details: list[EntryDetails]) -> None:
    """Each batch against its transactions, then the entry amount against what its details add up
    to. Where a figure is not given (a single TxDtls without its own amount takes the entry's,
    which is legal), there is nothing to compare."""
    for part in details:
        part.check(label)
    summed = 0
    from_transactions = True
    for part in details:
        if part.transactions and part.transactions_total is not None:
            summed += part.transactions_total
        elif part.stated_total is not None:
            summed += part.stated_total
            from_transactions = False
        else:
            return
    if details and summed != amount:
        message = (_l("条目 %(entry)s金额 %(amount)s 与其交易明细合计 %(summed)s 不符。", entry=label,
                      amount=_yuan(amount), summed=_yuan(summed)) if from_transactions else
                   _l("条目 %(entry)s金额 %(amount)s 与其批量合计（TtlAmt）%(summed)s 不符。", entry=label,
                      amount=_yuan(amount), summed=_yuan(summed)))
        raise format_error(message, f"{where}/Amt")


@dataclass(frozen=True)
class StatedTotals:
    """One part of Stmt/TxsSummry: TtlNtries, TtlCdtNtries or TtlDbtNtries."""

    name: str
    direction: str | None  # "credit", "debit", or None for all entries
    count: int | None  # NbOfNtries
    sum: int | None  # Sum: of the entries' amounts, whatever their direction
    net: int | None = None  # credits minus debits
    net_element: str = "TtlNetNtry"  # TtlNetNtryAmt before .001.08


@dataclass
class SummaryTally:
    """What the entries of the statement add up to, against what its TxsSummry says."""

    stated: list[StatedTotals]
    counts: dict[str, int] = field(default_factory=lambda: {"credit": 0, "debit": 0})
    sums: dict[str, int] = field(default_factory=lambda: {"credit": 0, "debit": 0})

    def add(self, amount: int, direction: str) -> None:
        self.counts[direction] += 1
        self.sums[direction] += amount

    def check(self) -> None:
        for totals in self.stated:
            directions = [totals.direction] if totals.direction else ["credit", "debit"]
            where = f"Stmt/TxsSummry/{totals.name}"
            counted = sum(self.counts[d] for d in directions)
            if totals.count is not None and totals.count != counted:
                raise format_error(_l("对账单汇总（%(part)s）的笔数 %(stated)s 与条目实际笔数 %(counted)s 不符。",
                                      part=totals.name, stated=totals.count, counted=counted),
                                   f"{where}/NbOfNtries")
            summed = sum(self.sums[d] for d in directions)
            if totals.sum is not None and totals.sum != summed:
                raise format_error(_l("对账单汇总（%(part)s）的金额合计 %(stated)s 与条目实际合计 %(summed)s 不符。",
                                      part=totals.name, stated=_yuan(totals.sum), summed=_yuan(summed)),
                                   f"{where}/Sum")
            net = self.sums["credit"] - self.sums["debit"]
            if totals.net is not None and totals.net != net:
                raise format_error(_l("对账单汇总（%(part)s）的净额 %(stated)s 与条目实际净额 %(net)s 不符"
                                      "（贷方为正）。", part=totals.name, stated=_yuan(totals.net), net=_yuan(net)),
                                   f"{where}/{totals.net_element}")
