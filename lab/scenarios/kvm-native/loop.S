# A tiny long-mode guest for `vireo-vmm --raw loop.bin --raw-mode long`: loaded at 0x10000 and entered
# in 64-bit mode (identity-mapped, flat segments, RSP=0x80000). It spins 50 M times, prints
# "LOOP-DONE\n" on COM1 and powers off through the ACPI PM1a control port.
    .code64
    .text
    .globl _start
_start:
    mov     $50000000, %rcx
1:  dec     %rcx
    jnz     1b

    lea     message(%rip), %rsi
    mov     $(message_end - message), %ecx
    mov     $0x3f8, %dx
2:  lodsb
    outb    %al, %dx
    dec     %ecx
    jnz     2b

    mov     $0x600, %dx        # PM1a control
    mov     $0x34, %al         # SLP_EN | S5 << 2
    outb    %al, %dx
3:  hlt
    jmp     3b

message:
    .ascii  "LOOP-DONE\n"
message_end:
