"""confirm_payment(): cashier and bank payments, voids, refunds, shifts (issue #3)."""
